"""One run over several processes (torchrun, DDP, gloo on CPU): the same run as one process, the
same records in MLflow, and a killed rank resumed on the same MLflow run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import command_error, needs_fashion, study_runs, wait_for_epochs
from mlflow.tracking import MlflowClient

from bench.config import LATER_SETTINGS, RunConfig
from bench.engine import checkpoint
from bench.engine.train import fit
from bench.errors import BenchError

# No BatchNorm and no dropout: each rank's share of a batch then gives exactly its share of the
# gradient, so 2 processes must retrace 1 process step by step (BN would see half batches).
LEARNS = dict(
    model="vgg-a",
    width=0.0625,
    head="small",
    dataset="fashion-mnist",
    subset=1024,
    epochs=2,
    batch_size=64,
    optimizer="sgd",
    lr=0.05,
    nesterov=True,
    device="cpu",
)


def torchrun(*args: str, processes: int = 2, **kwargs) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "bench.train",
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kwargs
    )


@needs_fashion
def test_two_processes_train_the_same_run_as_one(tmp_path):
    settings = tmp_path / "config.json"
    settings.write_text(json.dumps(LEARNS))
    done = torchrun(
        "--config-json",
        str(settings),
        "--checkpoint-dir",
        str(tmp_path / "two"),
        "--events",
        str(tmp_path / "events.jsonl"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    epochs = [e["epoch"] for e in events if "epoch" in e]
    [two] = [e["result"] for e in events if "result" in e]  # rank 0 alone reports
    assert len(epochs) == LEARNS["epochs"]

    one = fit(RunConfig(**LEARNS), checkpoint_dir=tmp_path / "one")
    assert max(h.val_acc for h in one.history) > 0.15  # it learns (chance is 0.1), so equal numbers mean something
    steps = (1024 - 102) // 64 * LEARNS["epochs"]
    assert steps >= 20
    for mine, theirs in zip(one.history, epochs):
        assert theirs["train_loss"] == pytest.approx(mine.train_loss, rel=1e-5)
        assert theirs["train_acc"] == mine.train_acc
        assert theirs["val_acc"] == mine.val_acc  # evaluation sharded over ranks, summed exactly
    assert two["test_acc"] == one.test_acc
    # Gradients summed in another order differ in the last bits: a near-tie may flip, nothing more.
    differ = sum(a != b for a, b in zip(two["predictions"], one.predictions))
    assert len(two["predictions"]) == len(one.predictions) and differ <= len(one.predictions) // 1000
    weights_one = checkpoint.load(tmp_path / "one" / "last.pt")["model"]
    weights_two = checkpoint.load(tmp_path / "two" / "last.pt")["model"]
    for name, value in weights_one.items():
        torch.testing.assert_close(weights_two[name], value, rtol=1e-4, atol=1e-6)
    assert checkpoint.load(tmp_path / "two" / "last.pt")["config"]["world_size"] == 2


def test_world_size_is_part_of_the_run():
    one = RunConfig(**LEARNS)
    two = one.replace(world_size=2)
    assert one.hash != two.hash
    # Runs recorded before the setting existed keep their identity: at its default it does not count.
    before = {k: v for k, v in one.to_dict().items() if k not in LATER_SETTINGS}
    text = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert one.hash == hashlib.sha256(text.encode()).hexdigest()[:12]
    with pytest.raises(BenchError, match="batch size 64 is not a multiple of the world size 3"):
        one.replace(world_size=3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gpus-per-run", "3"], "batch size 64 is not a multiple of the world size 3"),
        (["--gpus-per-run", "2", "--device", "cuda"], "2 processes per run need 2 GPUs; this machine has 0"),
        (["--gpus-per-run", "2", "--sync-batch-norm"], "sync_batch_norm works on GPUs only"),
        (["--gpus-per-run", "0"], "--gpus-per-run must be at least 1"),
    ],
)
def test_a_study_refuses_what_the_machine_cannot_run_in_one_line(tmp_path, args, message):
    if torch.cuda.is_available():
        pytest.skip("refusals of a machine without GPUs")
    assert message in command_error("bench.ablation", "--study", "depth", "--budget", "smoke", *args, cwd=tmp_path)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".bench").exists()  # nothing recorded


def test_nccl_without_cuda_stops_every_rank_before_training(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a machine without GPUs")
    done = torchrun(
        "--model",
        "vgg-a",
        "--width",
        "0.0625",
        "--dataset",
        "synthetic",
        "--subset",
        "256",
        "--epochs",
        "1",
        "--checkpoint-dir",
        str(tmp_path / "c"),
        "--dist-backend",
        "nccl",
    )
    # Each rank says it in one line; torchrun then adds its own report of the failed ranks.
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode != 0 and len(errors) == 2
    assert all("backend nccl needs CUDA GPUs" in line for line in errors)
    assert not (tmp_path / "c").exists()


def ablation(workdir: Path, *args: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "bench.ablation",
        "--study",
        "depth",
        "--budget",
        "smoke",
        "--variants",
        "vgg-a",
        "--gpus-per-run",
        "2",
        "--quiet",
        *args,
    ]
    return subprocess.Popen(
        command,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_study_with_two_processes_per_run_records_each_run_once(tmp_path):
    process = ablation(tmp_path, "--seeds", "2")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    found = study_runs(client, "depth")
    assert sorted(r.info.run_name for r in found) == ["vgg-a seed=0", "vgg-a seed=1"]
    for run in found:
        assert run.info.status == "FINISHED"
        assert run.data.params["world_size"] == "2"
        assert run.data.tags["bench.budget"] == "smoke+world_size=2"  # never mixed with 1-process runs
        for metric in ("val_acc", "train_loss"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert sorted(steps) == [1, 2]  # once each: rank 1 logged nothing
        assert "test_acc" in run.data.metrics
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"plots", "checkpoints"}
    # runs:/ URIs resolve against the global tracking URI (conftest restores the environment after).
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        model = mlflow.pytorch.load_model(f"runs:/{found[0].info.run_id}/module")  # rank 0's best weights
        # The pyfunc model's preprocessing came back from rank 0 with its result.
        served = mlflow.pyfunc.load_model(f"runs:/{found[0].info.run_id}/model").predict(torch.zeros(2, 32, 32).numpy())
    finally:
        mlflow.set_tracking_uri(previous)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert len(served) == 2 and served["class"][0]


def ranks() -> list[int]:
    """Pids of torchrun's worker processes (not torchrun itself) running bench.train."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"bench.train" in command and b"--events" in command and b"torch.distributed.run" not in command:
            pids.append(int(entry.name))
    return pids


@needs_fashion
def test_killed_rank_fails_the_run_and_the_rerun_resumes_it(tmp_path):
    longer = ["--dataset", "fashion-mnist", "--subset", "5000", "--epochs", "5"]  # seconds an epoch
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    client.search_experiments()  # create the store here, not concurrently with the command
    process = ablation(tmp_path, "--seeds", "1", *longer)
    run_id = wait_for_epochs(client, "depth", 1, [process], timeout=240).info.run_id
    os.kill(ranks()[-1], signal.SIGKILL)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0, output[-2000:]
    assert client.get_run(run_id).info.status == "FAILED"
    cut = {m.step for m in client.get_metric_history(run_id, "val_acc")}
    assert cut and max(cut) < 5

    rerun = ablation(tmp_path, "--seeds", "1", *longer)
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output[-3000:]
    [again] = study_runs(client, "depth")
    assert again.info.run_id == run_id and again.info.status == "FINISHED"
    assert again.data.tags["bench.resumed"] == "true"
    steps = [m.step for m in client.get_metric_history(run_id, "val_acc")]
    assert sorted(steps) == [1, 2, 3, 4, 5]  # resumed after the last checkpoint: no epoch twice
    log = tmp_path / ".bench" / "checkpoints" / RunConfig.from_dict(again.data.params).hash / "torchrun.log"
    assert log.exists()
