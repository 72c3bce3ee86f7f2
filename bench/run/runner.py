"""One runner for ablations and searches: Optuna's storage is the queue, MLflow the record.

A worker claims the next trial from the Optuna study (atomically, so two workers never run the
same one), trains it with bench.engine.train.fit, logs it through bench.tracking and tells Optuna the
outcome. An ablation enqueues its grid once (under a lock, so workers started together do not
enqueue twice); a search asks its sampler for new trials. A trial whose owner is not proven alive
(bench.run.owners: a heartbeat, a pid with its process's start time) is failed and enqueued again, and
its MLflow run marked FAILED and later resumed.

Here: the worker loop and the sweep of dead workers. What a worker runs is a job (bench.run.job), opened
with its parent run by bench.run.parent_runs; one trial is bench.run.trial; the helper processes of
--workers N are bench.run.helper_workers.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from bench import progress as progress_ui
from bench.errors import BenchError
from bench.run import outage, owners
from bench.run.helper_workers import spawn_helpers, stop_helpers
from bench.run.job import Job
from bench.run.optuna_storage import storage_lock
from bench.run.trial import run_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

POLL_S = 2.0  # how often an idle worker looks again while others still run


# --- dead workers ------------------------------------------------------------------------------


def sweep_dead(job: Job) -> int:
    """Fail the RUNNING trials whose owner is not proven alive (bench.run.owners), enqueue each once more,
    and mark their MLflow runs FAILED."""
    fail_stale_trials(job.study)  # database storages with a heartbeat: the storage's own test
    beats = owners.beats(job.storage)
    swept = []
    # Claims record their owner under this lock (work), so no trial is seen here half-claimed.
    with storage_lock(job.storage_url):
        for frozen in job.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            reason = owners.why_dead(frozen, beats)
            if reason is None:
                continue
            try:
                job.study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
            except (ValueError, RuntimeError):
                continue
            RetryHeartbeatStaleTrialCallback(max_retry=1)(job.study, frozen)
            swept.append((frozen, reason))
    for frozen, reason in swept:
        run_id = frozen.user_attrs.get("mlflow_run_id")
        if run_id and job.tracker.status(run_id) == "RUNNING":
            job.tracker.set_status(
                run_id, "FAILED", recovered=f"worker {owners.owner(frozen)} died: {reason}; trial re-queued"
            )
    return len(swept)


# --- the worker loop -----------------------------------------------------------------------------


def work(
    job: Job,
    *,
    checkpoint_root: Path,
    data_dir: str | None = None,
    quiet: bool = False,
    helpers: list[subprocess.Popen] | None = None,
) -> None:
    """Claim and run trials until none are left, then settle the parent run's status."""
    tracker = job.tracker
    tracker.set_status(job.parent_run_id, "RUNNING")
    bars = progress_ui.StudyProgress(job.optuna_name, job.total(), quiet=quiet)
    with outage.one_voice():
        try:
            with bars:
                _claim_and_run(job, bars, helpers or [], checkpoint_root, data_dir)
        except KeyboardInterrupt:
            tracker.set_status(job.parent_run_id, "KILLED", state="interrupted")
            raise
        except BaseException as exc:  # whatever stops this worker, the parent run must not stay RUNNING
            with contextlib.suppress(Exception):  # as far as the store still answers
                tracker.set_status(job.parent_run_id, "FAILED", state="failed", error=type(exc).__name__)
            reason = outage.stop_reason(exc) if isinstance(exc, Exception) else None
            if reason:
                raise BenchError(reason) from None
            raise
    for helper in helpers or []:
        helper.wait()
    tracker.set_status(job.parent_run_id, "FINISHED" if job.all_finished() else "FAILED")


def _claim_and_run(
    job: Job, bars, helpers: list[subprocess.Popen], checkpoint_root: Path, data_dir: str | None
) -> None:
    bars.update(job.done(), job.progress_info())
    waited_for = ""
    while True:
        sweep_dead(job)
        trial = claim(job)
        if trial is None:
            # Bounded: each pass sweeps again, and an owner not proven alive is failed there.
            others = job.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            live_helpers = [p for p in helpers if p.poll() is None]
            if not others and not live_helpers:
                return
            waited_for = say_whom(others, live_helpers, waited_for)
            time.sleep(POLL_S)
            bars.update(job.done(), job.progress_info())
            continue
        run_trial(job, trial, checkpoint_root, data_dir, bars)
        bars.update(job.done(), job.progress_info())


def claim(job: Job) -> optuna.Trial | None:
    """The job's next trial, its owner recorded under the same lock that sweep_dead holds, so that
    a trial RUNNING without an owner is one whose owner's record was lost."""
    with storage_lock(job.storage_url):
        trial = job.claim()
        if trial is not None:
            owners.record(trial)
    return trial


def say_whom(others: list, helpers: list[subprocess.Popen], said: str) -> str:
    """Say on stderr whom an idle worker waits for, when that changes; returns what was said."""
    whom = [f"trial {t.number} ({owners.owner(t)})" for t in others]
    whom += [f"helper worker {p.pid}" for p in helpers]
    text = ", ".join(whom)
    if text != said:
        progress_ui.console.print(
            f"waiting for {text} (each checked alive every {POLL_S:g} s; "
            f"one on another host is given up after {owners.GRACE_S} s of silence)",
            markup=False,
            highlight=False,
        )
    return text


def work_together(
    job: Job,
    module: str,
    argv: list[str] | None,
    workers: int,
    *,
    checkpoint_root: Path,
    data_dir: str | None,
    quiet: bool,
) -> None:
    """`work` in this process and in `workers - 1` helper processes running the same command."""
    helpers = spawn_helpers(module, argv, workers - 1)
    try:
        work(job, checkpoint_root=checkpoint_root, data_dir=data_dir, quiet=quiet, helpers=helpers)
    finally:
        stop_helpers(helpers)
