"""Who owns a RUNNING trial, and whether that owner is proven alive.

A trial is owned by the worker process that claimed it: its host and pid, and the process's start
time, recorded as the trial's user attributes when it is claimed. An owner that cannot be proven
alive is dead, so that no trial stays RUNNING for ever:
- no owner recorded (the journal line that held it was torn by a crash or a full disk);
- on this host, no process with that pid, a zombie, or a process started at another time (the pid
  was reused by another program after the worker died);
- on another host, a heartbeat older than GRACE_S: Optuna's own on database storages that have
  one, otherwise the trial's `bench_heartbeat` system attribute, which the worker beats itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import optuna
import psutil
from optuna.trial import FrozenTrial

OWNER = "worker"  # user attribute: host:pid
STARTED = "worker_started"  # user attribute: the owner process's start time (seconds since the epoch)
BEAT = "bench_heartbeat"  # system attribute: time.time() of the owner's last beat (storages without one)
HEARTBEAT_S = 10
GRACE_S = 60  # an owner on another host silent this long is dead
SAME_START_S = 0.05  # start times are read from /proc in clock ticks: equal to within one


def this_process() -> dict[str, object]:
    """The owner attributes of this process."""
    return {OWNER: f"{socket.gethostname()}:{os.getpid()}", STARTED: psutil.Process().create_time()}


def record(trial: optuna.Trial) -> None:
    for key, value in this_process().items():
        trial.set_user_attr(key, value)


def owner(trial: FrozenTrial) -> str:
    """The owner as people read it (host:pid), or a word saying there is none."""
    return str(trial.user_attrs.get(OWNER) or "no recorded worker")


def why_dead(trial: FrozenTrial, storage_beats: bool, now: float | None = None) -> str | None:
    """None when the trial's owner is proven alive; otherwise why it is taken for dead.

    `storage_beats`: the storage keeps Optuna's heartbeat, which judges owners on other hosts.
    A trial owned by this very process is dead too: callers sweep only between this process's trials.
    """
    worker, started = trial.user_attrs.get(OWNER), trial.user_attrs.get(STARTED)
    host, _, pid = str(worker or "").rpartition(":")
    if not host or not pid.isdigit():
        return "its worker was never recorded (a torn journal line?)"
    if host == socket.gethostname():
        if int(pid) == os.getpid():
            return "this worker left it running"
        return _local_verdict(int(pid), started)
    if storage_beats:
        return None  # Optuna's heartbeat decides (fail_stale_trials)
    last = trial.system_attrs.get(BEAT) or trial.datetime_start.timestamp()
    silent = (now or time.time()) - float(last)
    return None if silent <= GRACE_S else f"its worker {worker} has been silent for {silent:.0f} s"


def _local_verdict(pid: int, started: object) -> str | None:
    try:
        process = psutil.Process(pid)
        status, created = process.status(), process.create_time()
    except psutil.NoSuchProcess:
        return f"its worker process {pid} is gone"
    except psutil.AccessDenied:
        return None  # another user's live process: it exists, and /proc hides no start times
    if status == psutil.STATUS_ZOMBIE:
        return f"its worker process {pid} is gone (a zombie)"
    if not isinstance(started, (int, float)) or abs(created - started) > SAME_START_S:
        return f"its worker process {pid} is gone (the pid now belongs to another process)"
    return None


class Heartbeat:
    """Beat for one trial while it trains: Optuna's heartbeat on database storages that keep one,
    else the trial's BEAT system attribute, so that workers on other hosts can tell it is alive."""

    def __init__(self, storage, study_name: str, number: int):
        study_id = storage.get_study_id_from_name(study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        if beats(storage):
            self._beat = lambda: storage.record_heartbeat(trial_id)
        else:
            self._beat = lambda: storage.set_trial_system_attr(trial_id, BEAT, time.time())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            # A storage that stops answering is the training thread's to report, in one line.
            with contextlib.suppress(Exception):
                self._beat()
            self._stop.wait(HEARTBEAT_S)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


def beats(storage) -> bool:
    """Whether the storage keeps Optuna's heartbeat (BaseHeartbeat's public methods)."""
    return bool(getattr(storage, "get_heartbeat_interval", lambda: None)())
