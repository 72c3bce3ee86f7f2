"""The standing fault test: a study with two workers, SIGKILLed at random moments, must end exactly as
an uninterrupted run of the same seeds does.

A kill lands anywhere: in start-up, mid-epoch, mid-checkpoint, while MLflow logs or Optuna writes
its journal. Two workers (the same command in two terminals) share the study; a random while after
a run is seen training, one of them is SIGKILLed and a new one started in its place, several times;
then journal logs are torn at random places (a crash mid-write, the next append glued on), and a
last clean start mends them and finishes whatever a killed retry left. The RNG that picks the moments and
the victims is seeded, so the test itself replays the same way.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import study_runs
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench.tracking import EPOCH_METRICS, METRIC_NAMES

STUDY = [
    "--study",
    "depth",
    "--budget",
    "smoke",
    "--variants",
    "vgg-a,vgg-b",
    "--seeds",
    "2",
    "--epochs",
    "6",
    "--quiet",
]
KILLS = 4
TEARS = 3
TRIAL_UPDATES = {6, 7, 8, 9}  # Optuna's journal op codes: trial state/values, intermediate value, attrs
SEED = 13
WAIT_S = 300  # the longest the study may take on a busy 2-core machine


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}


def start_worker(folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command("bench.ablation", *STUDY),
        cwd=folder,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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
            victim.send_signal(signal.SIGKILL)
            victim.wait()
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


def tear_at_random(journal: Path, rng: random.Random, count: int = TEARS) -> None:
    """Tear `count` logs anywhere in the journal as a crash mid-write does: the log cut at a random
    byte, the next append glued onto the fragment. Logs that set a trial's state, value, intermediate
    value or attribute (its owner, its heartbeat...); creating a study or trial, or a study's
    attributes, is a single write at a worker's start that a crash loses whole or not at all."""
    lines = journal.read_bytes().splitlines(keepends=True)
    tearable = [i for i, line in enumerate(lines[:-1]) if json.loads(line)["op_code"] in TRIAL_UPDATES]
    for i in rng.sample(tearable, min(count, len(tearable))):
        lines[i] = lines[i][: rng.randrange(1, len(lines[i]) - 1)]  # no newline: the next log glues on
    journal.write_bytes(b"".join(lines))


def finish(folder: Path) -> None:
    result = subprocess.run(
        command("bench.ablation", *STUDY), cwd=folder, env=environment(), capture_output=True, text=True, timeout=WAIT_S
    )
    assert result.returncode == 0, result.stderr[-3000:]


def report_csv(folder: Path) -> pd.DataFrame:
    result = subprocess.run(
        command("bench.report", "--study", "depth", "--format", "csv", "--out", "report"),
        cwd=folder,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
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
        optuna.storages.journal.JournalFileBackend(str(folder / ".bench" / "optuna.journal"))
    )
    [name] = optuna.study.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    complete = Counter(t.user_attrs["point"] for t in trials if t.state == TrialState.COMPLETE)
    assert sorted(complete.values()) == [1, 1, 1, 1] and set(complete) == {
        r.data.tags["bench.config_hash"] for r in children
    }
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return {r.info.run_name: r.data.tags["bench.config_hash"] for r in children}


@pytest.mark.slow
def test_a_study_killed_at_random_ends_as_an_uninterrupted_one(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    finish(straight)
    rng = random.Random(SEED)
    landed = kill_at_random(killed, rng)
    tear_at_random(killed / ".bench" / "optuna.journal", rng)
    finish(killed)  # a point whose retry was killed too is queued anew by the next start

    assert landed == KILLS
    assert check_invariants(killed) == check_invariants(straight)
    # The report's CSV is a row per run (issue 28): equal runs give equal means, spreads and tests.
    numbers = ["seed", "params", "flops", "best_val_acc_pct", "test_acc_pct", "convergence_slope"]
    expected, got = report_csv(straight), report_csv(killed)
    pd.testing.assert_frame_equal(got[["variant", *numbers]], expected[["variant", *numbers]])
