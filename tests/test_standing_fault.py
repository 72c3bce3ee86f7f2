"""The standing fault test: a study with two workers, SIGKILLed at random moments, must end exactly as
an uninterrupted run of the same seeds does.

A kill lands anywhere: in start-up, mid-epoch, mid-checkpoint, while MLflow logs or Optuna writes
its journal. Two workers (the same command in two terminals) share the study; a random while after
a run is seen training, one of them is SIGKILLed and a new one started in its place, several times;
when the killed worker wrote the journal's last line, that line is torn at a random byte (the other
workers then append after the fragment); a last clean start finishes whatever a killed retry left. The RNG that picks the moments and
the victims is seeded, so the test itself replays the same way.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench.tracking import EPOCH_METRICS, METRIC_NAMES
from conftest import study_runs

STUDY = ["--study", "depth", "--budget", "smoke", "--variants", "vgg-a,vgg-b", "--seeds", "2",
         "--epochs", "6", "--quiet"]
KILLS = 4
SEED = 13
WAIT_S = 300  # the longest the study may take on a busy 2-core machine


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}


def start_worker(folder: Path) -> subprocess.Popen:
    return subprocess.Popen(command("bench.ablation", *STUDY), cwd=folder, env=environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def training(client: MlflowClient) -> bool:
    return bool(study_runs(client, "depth", where="attributes.status = 'RUNNING'"))


def kill_at_random(folder: Path, rng: random.Random) -> int:
    """Two workers on the study; KILLS times, SIGKILL one at a random moment and start a new one.

    Returns how many kills landed on a live worker (all of them, unless the study ended first).
    """
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    workers = [start_worker(folder), start_worker(folder)]
    deadline = time.monotonic() + WAIT_S
    landed = 0
    try:
        for _ in range(KILLS):
            # Mostly while a run trains (where the state is), sometimes in a worker's start-up.
            while not ((folder / "mlflow.db").exists() and training(client)):
                if all(w.poll() is not None for w in workers) or time.monotonic() > deadline:
                    return landed
                time.sleep(0.1)
            time.sleep(rng.uniform(0, 3))
            live = [w for w in workers if w.poll() is None]
            if not live:
                return landed
            victim = rng.choice(live)
            survivors = [w for w in live if w is not victim]
            for worker in survivors:  # still while the victim's last write is torn, as a crash leaves it
                worker.send_signal(signal.SIGSTOP)
            try:
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                tear_last_line(folder / ".bench" / "optuna.journal", victim.pid, rng)
            finally:
                for worker in survivors:
                    worker.send_signal(signal.SIGCONT)
            landed += 1
            workers = [w for w in workers if w is not victim] + [start_worker(folder)]
        for worker in workers:
            worker.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return landed


def tear_last_line(journal: Path, pid: int, rng: random.Random) -> None:
    """Cut the journal's last line at a random byte when the killed worker `pid` wrote it (as a kill
    mid-write leaves it); the other workers' next appends are then glued onto the torn fragment,
    mid-file. Whichever log it was (a trial's owner, its value, a heartbeat) is lost."""
    lines = journal.read_bytes().splitlines(keepends=True) if journal.exists() else []
    owner = f'"worker":"{socket.gethostname()}:{pid}"'.encode()
    writers = {writer(line) for line in lines if owner in line}  # the process's storage, any thread
    if lines and lines[-1].endswith(b"\n") and writer(lines[-1]) in writers:
        whole = b"".join(lines)
        journal.write_bytes(whole[: len(whole) - len(lines[-1]) + rng.randrange(1, len(lines[-1]))])


def writer(line: bytes) -> str:
    """The storage that wrote a journal log: its worker_id less the thread's part."""
    return json.loads(line)["worker_id"].rsplit("-", 1)[0]


def finish(folder: Path) -> None:
    result = subprocess.run(command("bench.ablation", *STUDY), cwd=folder, env=environment(),
                            capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode == 0, result.stderr[-3000:]


def report_csv(folder: Path) -> pd.DataFrame:
    result = subprocess.run(command("bench.report", "--study", "depth", "--format", "csv", "--out", "report"),
                            cwd=folder, env=environment(), capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return pd.read_csv(io.StringIO(result.stdout), comment="#")  # "# key: value" provenance lines first


def check_invariants(folder: Path) -> dict[str, str]:
    """Every point once in Optuna and in MLflow, all FINISHED, no step twice; returns run name -> hash."""
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    children = study_runs(client, "depth")
    [parent] = study_runs(client, "depth", "study")
    assert parent.info.status == "FINISHED"
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert len({r.data.tags["bench.config_hash"] for r in children}) == 4
    for run in children:
        for name in [METRIC_NAMES.get(m, m) for m in EPOCH_METRICS]:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
            assert sorted(steps) == list(range(1, 7)), (run.info.run_name, name, steps)
        for name in ("test_acc", "best_val_acc"):
            assert len(client.get_metric_history(run.info.run_id, name)) == 1, (run.info.run_name, name)

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / ".bench" / "optuna.journal")))
    [name] = optuna.study.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    complete = Counter(t.user_attrs["point"] for t in trials if t.state == TrialState.COMPLETE)
    assert sorted(complete.values()) == [1, 1, 1, 1] and set(complete) == {r.data.tags["bench.config_hash"] for r in children}
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return {r.info.run_name: r.data.tags["bench.config_hash"] for r in children}


@pytest.mark.slow
def test_a_study_killed_at_random_ends_as_an_uninterrupted_one(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    finish(straight)
    landed = kill_at_random(killed, random.Random(SEED))
    finish(killed)  # a point whose retry was killed too is queued anew by the next start

    assert landed == KILLS
    assert check_invariants(killed) == check_invariants(straight)
    numbers = ["runs", "params", "flops", "best_val_acc_pct", "best_val_acc_pct_std", "test_acc_pct",
               "test_acc_pct_std", "diff_pts", "p_value"]
    expected, got = report_csv(straight), report_csv(killed)
    pd.testing.assert_frame_equal(got[["variant", *numbers]], expected[["variant", *numbers]])
