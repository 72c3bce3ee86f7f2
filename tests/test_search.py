"""bench.search on the smoke budget: pruning, one MLflow run per trial, resume to a total, two
workers sharing a study, a SIGKILLed worker's trial failed and retried, repeated proposals, and
bad input. Real MLflow (sqlite) and Optuna (journal) stores in tmp_path, real training on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, error_line, main_error, study_runs
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from bench.search import command as search
from bench.search.job import standing

STUDY = "lr-wd-search-smoke+device=cpu"  # the override is part of the budget label


@pytest.fixture
def place(tmp_path, monkeypatch):
    """An MLflow store and an Optuna journal of the test's own; helpers' logs land in tmp_path too."""
    monkeypatch.chdir(tmp_path)
    return {
        "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "storage": str(tmp_path / "optuna.journal"),
        "args": [
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--storage",
            str(tmp_path / "optuna.journal"),
            "--device",
            "cpu",
        ],
    }


def load(place, name: str = STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(place["storage"])))


def child_runs(place, experiment: str = "lr-wd") -> dict[int, object]:
    """The MLflow child runs of a study, by trial number; fails if a trial has two."""
    runs = study_runs(MlflowClient(place["uri"]), experiment)
    by_trial = {int(r.data.tags["bench.trial"]): r for r in runs}
    assert len(by_trial) == len(runs), "two MLflow runs for one trial"
    return by_trial


def test_search_prunes_logs_every_trial_and_resumes_to_the_total(place):
    assert search.main(["--study", "lr-wd", "--budget", "smoke", "--trials", "3", *place["args"]]) == 0
    first = {t.number: (t.state, t.params, t.value) for t in load(place).trials}
    assert sorted(first) == [0, 1, 2]

    # Same command, larger total: the 3 trials stay as they are and 2 more run, not 5.
    assert search.main(["--study", "lr-wd", "--budget", "smoke", "--trials", "5", *place["args"]]) == 0
    study = load(place)
    trials = study.trials
    assert [t.number for t in trials] == list(range(5))
    assert {t.number: (t.state, t.params, t.value) for t in trials[:3]} == first
    assert len({tuple(t.params.values()) for t in trials}) == 5
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "the smoke space is built so that the median pruner stops at least one trial"
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)

    runs = child_runs(place)
    assert sorted(runs) == list(range(5))
    for trial in trials:
        run = runs[trial.number]
        assert run.info.run_name == f"trial {trial.number}"
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        assert float(run.data.params["weight_decay"]) == pytest.approx(trial.params["weight_decay"])
        curve = MlflowClient(place["uri"]).get_metric_history(run.info.run_id, "val_acc")
        assert sorted(m.step for m in curve) == sorted(trial.intermediate_values)  # curve kept, pruned or not
        if trial.state == TrialState.PRUNED:
            assert run.info.status == "KILLED" and run.data.tags["bench.state"] == "pruned"
            assert "test_acc" not in run.data.metrics  # never shown as a finished run
        else:
            assert run.info.status == "FINISHED" and run.data.tags["bench.state"] == "complete"
            assert run.data.metrics["best_val_acc"] == pytest.approx(trial.value)

    client = MlflowClient(place["uri"])
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.run_name == STUDY and parent.info.status == "FINISHED"
    assert parent.data.metrics["best.value"] == pytest.approx(study.best_value)
    assert parent.data.metrics["best.trial"] == study.best_trial.number
    assert parent.data.metrics["best.lr"] == pytest.approx(study.best_params["lr"])
    assert {"importance.lr", "importance.weight_decay"} <= set(parent.data.metrics)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "search")}
    assert logged == {
        f"search/{n}.png" for n in ("optimization_history", "parallel_coordinate", "param_importances")
    } | {"search/trials.csv", "search/summary.md"}
    assert "python -m bench.search --study lr-wd" in parent.data.tags["mlflow.note.content"]
    best_run = study.best_trial.user_attrs["mlflow_run_id"]
    assert client.get_model_version_by_alias(STUDY, "best").run_id == best_run  # registered as <study>-<budget>

    # --timeout: past it, a worker claims nothing more, whatever --trials says.
    assert (
        search.main(["--study", "lr-wd", "--budget", "smoke", "--trials", "9", "--timeout", "0.001", *place["args"]])
        == 0
    )
    assert len(load(place).trials) == 5


def test_two_workers_share_one_study_without_duplicates_or_losses(place):
    # The optimizer study: a categorical choice with a per-optimizer lr and weight-decay range.
    # Trials long enough (a few seconds) that the helper, which first imports torch, gets some.
    args = ["--study", "optimizer", "--budget", "smoke", "--trials", "6", "--epochs", "3", *place["args"]]
    assert search.main([*args, "--workers", "2"]) == 0
    trials = load(place, "optimizer-search-smoke+device=cpu,epochs=3").trials
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers took trials"
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6
    for trial in trials:
        optimizer = trial.params["optimizer"]
        assert set(trial.params) == {"optimizer", f"lr.{optimizer}", f"weight_decay.{optimizer}"}
    runs = child_runs(place, "optimizer")
    assert sorted(runs) == list(range(6))
    for trial in trials:
        params = runs[trial.number].data.params
        assert params["optimizer"] == trial.params["optimizer"]
        assert float(params["lr"]) == pytest.approx(trial.params[f"lr.{trial.params['optimizer']}"])


def mid_trial(place) -> list:
    """Trials running with at least one epoch reported (none while the worker is still starting)."""
    try:
        study = load(place)
    except KeyError:  # the journal exists before the worker has created the study in it
        return []
    return [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.intermediate_values]


def test_a_killed_worker_leaves_a_trial_that_the_next_start_fails_and_retries(place):
    command = [
        sys.executable,
        "-m",
        "bench.search",
        "--study",
        "lr-wd",
        "--budget",
        "smoke",
        "--trials",
        "2",
        "--quiet",
        *place["args"],
    ]
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None:
            running = mid_trial(place)
            if running:
                worker.send_signal(signal.SIGKILL)
                break
            time.sleep(0.1)
        assert worker.wait() == -signal.SIGKILL, worker.stderr.read().decode()
    finally:
        worker.kill()
        worker.wait()
    dead = load(place).trials[running[0].number]
    assert dead.state == TrialState.RUNNING  # nobody told Optuna: the worker is gone

    assert search.main(["--study", "lr-wd", "--budget", "smoke", "--trials", "2", *place["args"]]) == 0
    trials = load(place).trials
    assert trials[dead.number].state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == dead.number)
    assert retry.params == dead.params and retry.state == TrialState.COMPLETE
    assert 1 not in retry.intermediate_values  # resumed from the dead trial's checkpoint
    assert len(standing(load(place))) == 2  # the retry stands in for the dead trial

    run = child_runs(place)[retry.number]  # the dead trial's MLflow run, continued
    assert run.info.run_id == dead.user_attrs["mlflow_run_id"]
    assert run.info.status == "FINISHED" and run.data.tags["bench.resumed"] == "true"
    assert "died" in run.data.tags["bench.recovered"]
    curve = MlflowClient(place["uri"]).get_metric_history(run.info.run_id, "val_acc")
    assert sorted(m.step for m in curve) == [1, 2]


def test_a_repeated_proposal_is_told_the_earlier_outcome_not_trained_again(place, tmp_path):
    path = study_file(
        tmp_path,
        "repeats",
        space='batch_size = { type = "categorical", choices = [32, 64] }',
        search='sampler = { name = "random", seed = 0 }\npruner = "none"',
    )
    assert search.main(["--study", str(path), "--trials", "4", *place["args"]]) == 0
    trials = load(place, "repeats-search-smoke+device=cpu").trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    originals = [t for t in trials if "repeat_of" not in t.user_attrs]
    assert len(originals) == len({t.params["batch_size"] for t in trials})
    for trial in trials:
        if "repeat_of" in trial.user_attrs:
            twin = trials[trial.user_attrs["repeat_of"]]
            assert twin.params == trial.params and twin.value == trial.value
    assert sorted(child_runs(place, "repeats")) == [t.number for t in originals]


SPACE = 'lr = { type = "float", low = 0.001, high = 0.1, log = true }'


def study_file(tmp_path: Path, name: str, space: str = SPACE, search: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n[budgets.smoke]\ndataset = "synthetic"\nwidth = 0.0625\nsubset = 160\nepochs = 1\n'
        f"[search]\n{search}\n[search.space]\n{space}\n"
    )
    return path


BAD = {
    "empty range": (dict(space='lr = { type = "float", low = 0.01, high = 0.01 }'), "empty"),
    "inverted range": (dict(space='lr = { type = "float", low = 0.1, high = 0.01 }'), "inverted"),
    "unknown distribution": (
        dict(space='lr = { type = "normal", low = 0.01, high = 0.1 }'),
        "unknown distribution type 'normal'",
    ),
    "unknown sampler": (dict(search='sampler = "annealing"'), "unknown sampler 'annealing'"),
    "unknown pruner": (dict(search='pruner = { name = "patient" }'), "unknown pruner 'patient'"),
    "log range touching 0": (
        dict(space='weight_decay = { type = "float", low = 0.0, high = 0.01, log = true }'),
        "above 0",
    ),
    "not a run setting": (
        dict(space='learning_rate = { type = "float", low = 0.01, high = 0.1 }'),
        "'learning_rate' is not a run setting",
    ),
    "unknown sampler option": (dict(search='sampler = { name = "tpe", n_startup = 3 }'), "takes no option 'n_startup'"),
}


def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    cases = {}
    for case, (parts, expected) in BAD.items():
        path = study_file(tmp_path, case.replace(" ", "-"), **parts)
        cases[case] = (["--study", str(path)], expected)
    good = str(study_file(tmp_path, "good"))
    cases["--workers 0"] = (["--study", good, "--workers", "0"], "--workers must be at least 1")
    cases["--trials 0"] = (["--study", good, "--trials", "0"], "--trials must be")
    cases["storage"] = (
        ["--study", good, "--storage", "postgresql+psycopg2://bench:s3cret@127.0.0.1:9/optuna"],
        "cannot open Optuna storage postgresql+psycopg2://bench:***@127.0.0.1:9/optuna",
    )
    monkeypatch.chdir(tmp_path)
    tracking = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]

    # Two through `python -m bench.search` itself, started together (each pays the imports) ...
    commands = {
        case: subprocess.Popen(
            [sys.executable, "-m", "bench.search", *cases[case][0], *tracking],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for case in ("storage", "inverted range")
    }
    lines = {case: error_line(worker.wait(timeout=120), worker.stderr.read()) for case, worker in commands.items()}
    # ... and every case through the same wrapper in this process, which costs no import.
    for case, (argv, _) in cases.items():
        lines[f"{case} (in process)"] = main_error(search.main, [*argv, *tracking], capsys)

    for case, line in lines.items():
        assert cases[case.removesuffix(" (in process)")][1] in line, f"{case}: {line}"
        assert "s3cret" not in line
