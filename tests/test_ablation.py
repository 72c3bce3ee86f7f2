"""A whole study end to end into a real MLflow store and a real Optuna journal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
import torch
from conftest import command_error, journal_trials, study_runs, wait_for_epochs
from mlflow.tracking import MlflowClient

from bench import ablation
from bench.config import RunConfig
from bench.run import studies

SMOKE = ["--study", "depth", "--budget", "smoke", "--variants", "vgg-a,vgg-b"]


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.ablation", *args]


def env(threads: int = 1) -> dict[str, str]:
    # Several workers on two cores: one thread each, or they spin against each other.
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def test_study_end_to_end_then_rerun_skips(workdir):
    assert ablation.main(SMOKE) == 0
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    [parent] = study_runs(client, "depth", "study")
    runs = study_runs(client, "depth")
    assert parent.info.status == "FINISHED"
    assert sorted(r.info.run_name for r in runs) == ["vgg-a seed=0", "vgg-b seed=0"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["bench.budget"] == "smoke"
        assert run.data.tags["bench.variant"] in ("vgg-a", "vgg-b")
        config = RunConfig.from_dict({k: v for k, v in run.data.params.items()})
        assert config.hash == run.data.tags["bench.config_hash"]  # params are the whole config
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == list(range(1, config.epochs + 1))
        for key in ("test_acc", "best_val_acc", "params", "flops", "train_seconds"):
            assert key in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert artifacts == {"plots/learning_curves.png", "plots/confusion_matrix.png"}
        assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]

    module = mlflow.pytorch.load_model(f"runs:/{runs[0].info.run_id}/module")  # the bare network
    assert module(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    answers = mlflow.pyfunc.load_model(f"runs:/{runs[0].info.run_id}/model").predict(torch.zeros(2, 32, 32).numpy())
    assert list(answers.columns[:3]) == ["class", "class_index", "confidence"]  # preprocessing inside

    started = time.time()
    assert ablation.main(SMOKE) == 0  # everything finished: nothing trains again
    assert len(study_runs(client, "depth")) == 2
    assert all(r.info.end_time / 1000 < started for r in study_runs(client, "depth"))


@pytest.mark.parametrize("sig, expected", [(signal.SIGTERM, "KILLED"), (signal.SIGKILL, "RUNNING")])
def test_interrupted_run_is_marked_and_resumed(workdir, sig, expected):
    # Epochs long enough (~0.5 s on a quiet machine) that the signal lands mid-run.
    args = [*SMOKE, "--variants", "vgg-a", "--epochs", "25", "--dataset", "synthetic:size=6000", "--subset", "6000"]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    client.search_experiments()  # create the store here, not concurrently with the worker
    proc = subprocess.Popen(bench_cmd(*args), env=env(2), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_id = wait_for_epochs(client, "depth", 2, [proc], timeout=240).info.run_id
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert client.get_run(run_id).info.status == expected  # SIGKILL leaves it RUNNING: nobody could say
    done_before = len(client.get_metric_history(run_id, "val_acc"))

    result = subprocess.run(bench_cmd(*args), env=env(2), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    run = client.get_run(run_id)  # the same run, resumed, not a new one
    assert [r.info.run_id for r in study_runs(client, "depth")] == [run_id]
    assert run.info.status == "FINISHED" and run.data.tags["bench.resumed"] == "true"
    if sig == signal.SIGKILL:
        assert "died" in run.data.tags["bench.recovered"]
    steps = sorted(m.step for m in client.get_metric_history(run_id, "val_acc"))
    assert steps == list(range(1, 26))  # resumed from its checkpoint, no epoch lost or repeated
    assert done_before >= 2
    assert study_runs(client, "depth", "study")[0].info.status == "FINISHED"


def test_two_workers_split_the_grid(workdir):
    args = [*SMOKE, "--seeds", "3"]
    procs = [
        subprocess.Popen(
            bench_cmd(*args, "--quiet"), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    runs = study_runs(client, "depth")
    assert len(runs) == 6
    assert len({r.data.tags["bench.config_hash"] for r in runs}) == 6
    assert {r.data.tags["bench.pid"] for r in runs} == {str(p.pid) for p in procs}  # both worked
    trials = journal_trials(workdir)
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["point"] for t in trials}) == 6


def test_list_shows_the_studies(capsys):
    assert ablation.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in studies.names():  # every file in studies/
        assert name in out


BAD = [
    (["--study", "nope"], "unknown study 'nope'"),
    (["--study", "depth", "--variants", "vgg-z"], "unknown variant of study 'depth' 'vgg-z'"),
    (["--study", "depth", "--budget", "huge"], "unknown budget for study 'depth' 'huge'"),
    (["--study", "depth", "--epochs", "abc"], "'epochs' must be int"),
    (["--study", "depth", "--width", "9"], "'width' = 9.0 is out of range"),
    (["--study", "depth", "--dataset", "imagenet"], "unknown dataset"),
    (["--study", "depth", "--budget", "smoke", "--tracking-uri", "http://127.0.0.1:9"], "cannot reach the MLflow"),
    (["--study", "depth", "--budget", "smoke", "--dataset", "mnist", "--data-dir", "empty"], "mnist"),
    (["--study", "depth", "--workers", "0"], "--workers must be at least 1"),
]


def test_bad_input_is_one_line_and_touches_nothing(workdir):
    assert ablation.main(SMOKE) == 0
    before = (workdir / "mlflow.db").read_bytes()
    (workdir / "empty").mkdir()
    (workdir / "broken.toml").write_text('name = "broken"\n[variants\nvgg-a = 1\n')
    cases = [*BAD, (["--study", "broken.toml"], "line 2")]
    for args, fragment in cases:
        message = command_error("bench.ablation", *args, env={**env(), "BENCH_OFFLINE": "1"})
        assert fragment in message, (fragment, message)
    assert (workdir / "mlflow.db").read_bytes() == before
