"""Nothing waits for ever: a RUNNING trial's owner must be proven alive (bench.run.owners), or its trial
is failed and queued again. Real journals, real processes, real pids."""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
from conftest import journal_trials, study_runs, wait_for_epochs
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from bench.run import owners

ONE = ["--study", "depth", "--budget", "smoke", "--variants", "vgg-a"]
TWO = ["--study", "depth", "--budget", "smoke", "--variants", "vgg-a,vgg-b"]
LONG = [*ONE, "--epochs", "12", "--dataset", "synthetic:size=6000", "--subset", "6000"]  # long enough to kill
HOST = socket.gethostname()


def ablation(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.ablation", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}


def rerun(folder: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """The command run again; on the old code it waited for ever: a timeout here is that failure."""
    done = subprocess.run(
        ablation(*args), cwd=folder, env=environment(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def running(user_attrs: dict, system_attrs: dict | None = None, started_ago: float = 0) -> optuna.trial.FrozenTrial:
    start = datetime.datetime.now() - datetime.timedelta(seconds=started_ago)
    trial = optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        value=0.0,
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0, 1)},
        user_attrs=user_attrs,
        system_attrs=system_attrs or {},
    )
    trial.state, trial.datetime_start, trial.datetime_complete, trial.value = TrialState.RUNNING, start, None, None
    return trial


def journal_storage(folder: Path) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / ".bench" / "optuna.journal"))
    )


# --- who is alive -----------------------------------------------------------------------------------


def test_an_owner_is_alive_only_when_proven_so():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        started = psutil.Process(sleeper.pid).create_time()
        alive = running({owners.OWNER: f"{HOST}:{sleeper.pid}", owners.STARTED: started})
        assert owners.why_dead(alive, storage_beats=False) is None
        reused = running({owners.OWNER: f"{HOST}:{sleeper.pid}", owners.STARTED: started - 30})
        assert "belongs to another process" in owners.why_dead(reused, storage_beats=False)
        unknown_start = running({owners.OWNER: f"{HOST}:{sleeper.pid}"})  # a start time never recorded
        assert owners.why_dead(unknown_start, storage_beats=False) is not None
    finally:
        sleeper.kill()
        sleeper.wait()
    gone = running({owners.OWNER: f"{HOST}:{sleeper.pid}", owners.STARTED: started})
    assert "is gone" in owners.why_dead(gone, storage_beats=False)
    assert "never recorded" in owners.why_dead(running({}), storage_beats=False)
    assert "this worker left it" in owners.why_dead(running(owners.this_process()), storage_beats=False)

    # Another host: its own heartbeat (a journal), or Optuna's on database storages.
    far = {owners.OWNER: "elsewhere:4242", owners.STARTED: 1.0}
    assert owners.why_dead(running(far, {owners.BEAT: time.time() - 5}, started_ago=3600), False) is None
    silent = owners.why_dead(running(far, {owners.BEAT: time.time() - 90}, started_ago=3600), False)
    assert "elsewhere:4242 has been silent for 90 s" in silent
    assert owners.why_dead(running(far, started_ago=90), False) is not None  # never beat at all
    assert owners.why_dead(running(far, started_ago=90), storage_beats=True) is None  # fail_stale_trials judges


# --- a torn owner line ------------------------------------------------------------------------------


def test_a_trial_whose_owner_line_was_torn_is_queued_again(workdir):
    rerun(workdir, *TWO)
    journal = workdir / ".bench" / "optuna.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if b'"user_attr":{"worker":' in line)
    journal.write_bytes(b"".join(lines[:at]) + lines[at][: len(lines[at]) // 2])  # the disk filled mid-write
    [trial] = [t for t in journal_trials(workdir) if t.state == TrialState.RUNNING]
    assert "worker" not in trial.user_attrs  # RUNNING, and nobody owns it

    done = rerun(workdir, *TWO, timeout=180)
    assert "had a torn line" in done.stderr
    latest = {}
    for t in journal_trials(workdir):
        latest[t.user_attrs["point"]] = t
    assert [t.state for t in latest.values()] == [TrialState.COMPLETE] * 2
    assert trial.number in latest[trial.user_attrs["point"]].system_attrs["retry_history"]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    assert sorted(r.info.status for r in study_runs(client, "depth")) == ["FINISHED", "FINISHED"]


# --- a reused pid -----------------------------------------------------------------------------------


def start_with_pid(pid: int, argv: list[str], tries: int = 50) -> subprocess.Popen:
    """A process that gets `pid`, as the next process started on a busy machine may: the kernel's
    last-given pid is set just below it (root), retried when another process took it first."""
    for _ in range(tries):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        process = subprocess.Popen(argv)
        if process.pid == pid:
            return process
        process.kill()
        process.wait()
    pytest.fail(f"could not start a process with pid {pid}")


@pytest.mark.skipif(os.geteuid() != 0, reason="setting the next pid needs root")
def test_a_dead_workers_pid_taken_by_another_process_is_not_its_owner(workdir):
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    client.search_experiments()  # the store exists before the worker opens it
    worker = subprocess.Popen(
        ablation(*LONG), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    run_id = wait_for_epochs(client, "depth", 1, [worker], timeout=240).info.run_id
    worker.kill()
    worker.wait()
    impostor = start_with_pid(worker.pid, ["sleep", "600"])
    try:
        done = rerun(workdir, *LONG, timeout=300)
    finally:
        impostor.kill()
        impostor.wait()
    [name] = optuna.get_all_study_names(journal_storage(workdir))
    [failed, retry] = journal_trials(workdir, name)
    assert failed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "belongs to another process" in run.data.tags["bench.recovered"]
    assert "waiting for" not in done.stderr


# --- whom a worker waits for ------------------------------------------------------------------------


def test_an_idle_worker_says_whom_it_waits_for_and_stops_waiting_when_it_dies(workdir):
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    client.search_experiments()
    first = subprocess.Popen(
        ablation(*LONG), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    second = None
    try:
        wait_for_epochs(client, "depth", 1, [first], timeout=240, output=lambda p: "")
        second = subprocess.Popen(
            ablation(*LONG), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        said = ""
        while "waiting for" not in said:
            said += second.stderr.readline()
            assert second.poll() is None, said
        assert f"waiting for trial 0 ({HOST}:{first.pid})" in said
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        _, err = second.communicate(timeout=300)
        assert second.returncode == 0, err[-3000:]
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    [run] = study_runs(client, "depth")
    assert run.info.status == "FINISHED" and "is gone" in run.data.tags["bench.recovered"]
