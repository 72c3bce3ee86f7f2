"""One runner for ablations and searches: Optuna's storage is the queue, MLflow the record.

A worker claims the next trial from the Optuna study (atomically, so two workers never run the
same one), trains it with bench.engine.train.fit, logs it through bench.tracking and tells Optuna the
outcome. An ablation enqueues its grid once (under a lock, so workers started together do not
enqueue twice); a search asks its sampler for new trials. A trial whose owner is not proven alive
(bench.run.owners: a heartbeat, a pid with its process's start time) is failed and enqueued again, and
its MLflow run marked FAILED and later resumed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from bench import progress as progress_ui
from bench.config import RunConfig
from bench.engine.train import fit
from bench.errors import BenchError, RunFailed, one_line
from bench.run import launch, outage, owners, packing
from bench.run.optuna_storage import describe_storage, open_storage, storage_lock
from bench.store_files import STATE_DIR
from bench.tracking import Tracker

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

POLL_S = 2.0  # how often an idle worker looks again while others still run
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
OBJECTIVE = "val_acc"  # every trial's value: its best validation accuracy
REFILL_OF = "refill_of"  # user attribute of a complete trial's copy queued to refill a lost MLflow store


# --- jobs: what a worker runs ------------------------------------------------------------------


@dataclass(kw_only=True)
class Job:
    """A study being worked on: its Optuna study, its MLflow experiment and parent run.

    Subclasses say where trials come from (`claim`) and what each trains (`describe`).
    """

    experiment_name: str  # the MLflow experiment (one per study)
    optuna_name: str  # the Optuna study (one per study at one budget)
    study: optuna.Study
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    prune: bool = False  # whether intermediate values may stop a trial (searches)
    failures: list[str] = field(default_factory=list)
    storage: Any = None  # the opened Optuna storage (its public heartbeat API)
    storage_url: str | None = None
    system_metrics: bool = True  # MLflow's CPU/memory/GPU sampler on every child run

    def claim(self) -> optuna.Trial | None:
        return claim_waiting(self)

    def run_finished(self) -> None:
        """Called after each run finishes (an ablation updates its parent's summary)."""

    def describe(self, trial: optuna.Trial) -> tuple[RunConfig, str, dict[str, Any]]:
        raise NotImplementedError

    def total(self) -> int | None:
        """How many trials the job wants in all (for the progress bar), if known."""
        return None

    def done(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED_STATES))

    def all_finished(self) -> bool:
        return not self.failures

    def progress_info(self) -> str:
        """A short text beside the study bar (a search: its trial counts and best so far)."""
        return ""


def claim_waiting(job: Job) -> optuna.Trial | None:
    """Claim a WAITING trial, or nothing.

    Study.ask() pops the queue atomically, but samples a fresh trial when the queue is empty, and
    an ablation must never run a point outside its grid: so look first, and ask under the storage
    lock, which every worker holds to claim, so that no other one empties the queue in between.
    """
    with storage_lock(job.storage_url):
        if not job.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return None
        return job.study.ask()


def open_study(
    optuna_name: str,
    storage_url: str | None,
    tracker: Tracker,
    experiment_name: str,
    parent_tags: dict[str, Any],
    direction: str = "maximize",
    sampler=None,
    pruner=None,
    storage=None,
):
    """Create or load the Optuna study `optuna_name` (one per study at one budget) and its parent run,
    named the same, in the MLflow experiment `experiment_name` (one per study); call under storage_lock.

    `storage` is the already opened storage_url, when the caller checked it early.
    Returns (study, experiment_id, parent_run_id).
    """
    storage = storage or open_storage(storage_url)
    study = optuna.create_study(
        study_name=optuna_name,
        storage=storage,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if study.metric_names is None:  # the dashboard's axis: "val_acc", not "Objective 0"
        study.set_metric_names([OBJECTIVE])
    experiment_id = tracker.experiment_id(experiment_name)
    parent_id = study.user_attrs.get("mlflow_parent_run_id")
    if parent_id is not None and not tracker.run_exists(parent_id):
        parent_id = None  # the MLflow store was replaced: start a new parent there
    if parent_id is None:
        parent_id = tracker.create_parent(
            experiment_id,
            optuna_name,
            {
                "bench.study": experiment_name,
                "bench.optuna_study": optuna_name,
                "bench.storage": describe_storage(storage_url),
                **parent_tags,
            },
        )
        study.set_user_attr("mlflow_parent_run_id", parent_id)
        close_orphans(tracker, experiment_id, optuna_name, describe_storage(storage_url), parent_id)
    return study, experiment_id, parent_id


def close_orphans(tracker: Tracker, experiment_id: str, optuna_name: str, storage: str, parent_id: str) -> None:
    """Close the parent runs left RUNNING by this study's Optuna study in this storage before it was
    lost (a deleted journal): no worker can ever end them. KILLED, with a note naming the new parent."""
    for run in tracker.child_runs(experiment_id, role="study"):
        tags = run.data.tags
        if (
            run.info.run_id == parent_id
            or run.info.status != "RUNNING"
            or (tags.get("bench.optuna_study"), tags.get("bench.storage")) != (optuna_name, storage)
        ):
            continue
        note = f"its Optuna study {optuna_name} in {storage} was lost; the study goes on under parent run {parent_id}"
        tracker.set_status(run.info.run_id, "KILLED", state="superseded", superseded_by=parent_id, note=note)
        progress_ui.console.print(
            f"note: parent run {run.info.run_id} closed (KILLED): {note}", markup=False, highlight=False
        )


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


# --- one trial ---------------------------------------------------------------------------------


def run_trial(job: Job, trial: optuna.Trial, checkpoint_root: Path, data_dir: str | None, bars) -> None:
    config, run_name, tags = job.describe(trial)
    trial.set_user_attr("config_hash", config.hash)
    tracker = job.tracker

    finished = tracker.finished_run(job.experiment_id, config.hash)
    if finished is not None and not job.prune:
        # Trained before (perhaps under another Optuna storage): reuse, never train twice.
        trial.set_user_attr("mlflow_run_id", finished.info.run_id)
        trial.set_user_attr("reused", True)
        job.study.tell(trial, finished.data.metrics.get("best_val_acc", 0.0))
        return

    run_id = tracker.start_child(
        job.experiment_id,
        job.parent_run_id,
        config,
        run_name,
        {**tags, "trial": trial.number, "optuna_study": job.optuna_name},
    )
    trial.set_user_attr("mlflow_run_id", run_id)
    logged = tracker.logged_epochs(run_id)  # by an attempt whose checkpoint was then lost

    prune = job.prune and REFILL_OF not in trial.user_attrs  # a refill completed once: never pruned

    def on_epoch(stats) -> None:
        if stats.epoch not in logged:  # a metric step is logged once, whatever the retries
            tracker.log_epoch(run_id, stats)
        bars.epoch_done(stats)
        trial.report(stats.val_acc, stats.epoch)  # the dashboard's intermediate values, ablations too
        if prune:
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {stats.epoch} (val acc {stats.val_acc:.4f})")

    train = fit if config.world_size == 1 else launch.fit_in_processes  # torchrun of world_size processes
    heartbeat = owners.Heartbeat(job.storage, job.study.study_name, trial.number)
    with (
        bars.run(run_name, math.ceil(config.train_epochs)),
        heartbeat,
        tracker.system_metrics(run_id, job.system_metrics),
    ):
        try:
            result = train(
                config,
                on_epoch=on_epoch,
                on_batch=bars.batch_done,
                checkpoint_dir=checkpoint_root / config.hash,
                data_dir=data_dir,
                init_from=a_checkpoint(job, config, checkpoint_root),
            )
        except optuna.TrialPruned as pruned:
            tracker.set_status(run_id, "KILLED", state="pruned", pruned=str(pruned))
            job.study.tell(trial, state=TrialState.PRUNED)
            return
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: the last epoch's checkpoint is on disk; the next start resumes it.
            tracker.set_status(run_id, "KILLED", state="interrupted")
            job.study.tell(trial, state=TrialState.FAIL)
            RetryHeartbeatStaleTrialCallback(max_retry=None)(job.study, job.study.trials[trial.number])
            raise
        except BenchError:
            tracker.set_status(run_id, "FAILED")
            job.study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as exc:
            if outage.stop_reason(exc):  # a full disk, a store gone: every later run would meet it too
                _abandon(job, trial, run_id)
                raise
            message = one_line(exc, limit=250)
            tracker.set_status(run_id, "FAILED", state="failed", error=f"{type(exc).__name__}: {message}")
            job.study.tell(trial, state=TrialState.FAIL)
            job.failures.append(f"{run_name}: {type(exc).__name__}: {message}")
            if isinstance(exc, RunFailed):  # said in one line; a traceback would add nothing
                logging.getLogger("bench").warning("run %s failed: %s", run_name, message)
            else:
                logging.getLogger("bench").exception("run %s failed", run_name)
            return
    tracker.log_result(run_id, config, result, run_name)
    tracker.set_status(run_id, "FINISHED", state="complete")
    job.study.tell(trial, result.best_val_acc)
    job.run_finished()


def _abandon(job: Job, trial: optuna.Trial, run_id: str) -> None:
    """Mark a run stopped by a fault of the machine, as far as the stores still answer: a trial left
    RUNNING is failed and queued again by the next start, its run resumed from its checkpoint."""
    with contextlib.suppress(Exception):
        job.tracker.set_status(run_id, "FAILED", state="stopped")
    with contextlib.suppress(Exception):
        job.study.tell(trial, state=TrialState.FAIL)


def a_checkpoint(job: Job, config: RunConfig, checkpoint_root: Path) -> Path | None:
    """For an init_from_a run: the best checkpoint of its vgg-a run, on this machine or from MLflow."""
    if not config.init_from_a:
        return None
    a_hash = config.a_config.hash
    local = checkpoint_root / a_hash / "best.pt"
    if local.is_file():
        return local
    return job.tracker.fetch_best_checkpoint(job.experiment_id, a_hash, checkpoint_root / a_hash / "from-mlflow")


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


def spawn_helpers(
    module: str, argv: list[str] | None, count: int, log_dir: Path = STATE_DIR / "logs"
) -> list[subprocess.Popen]:
    """Start `count` more worker processes running the same command (each as --workers 1).

    The CPU threads are shared out among the workers: several processes each spinning as many
    threads as there are cores run slower together than one alone.
    """
    # The flags as given, with --workers 1 instead of the parent's (auto would measure and spawn again).
    args = sys.argv[1:] if argv is None else argv
    threads = str(max(1, (os.cpu_count() or 1) // (count + 1)))
    if count:
        torch.set_num_threads(int(threads))
    log_dir.mkdir(parents=True, exist_ok=True)
    helpers = []
    # Each worker's index and the count let a worker of torchrun groups pick its own GPUs (bench.run.launch).
    os.environ.update(BENCH_WORKERS=str(count + 1), BENCH_WORKER_INDEX="0")
    # Helpers ignore Ctrl-C (the ignored SIGINT is inherited through exec, and Python keeps it so):
    # one that is still importing would die of it with a traceback in its log. This process
    # stops them with SIGTERM instead (stop_helpers), which they handle as an interruption.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for i in range(count):
            # The helper writes to its own copy of the file; this process closes its copy at once.
            with open(log_dir / f"{module.rsplit('.', 1)[-1]}-worker-{i + 1}.log", "w") as log:
                helpers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", module, *packing.helper_args(args), "--quiet"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env={**os.environ, "OMP_NUM_THREADS": threads, "BENCH_WORKER_INDEX": str(i + 1)},
                    )
                )
    finally:
        signal.signal(signal.SIGINT, previous)
    return helpers


def stop_helpers(helpers: list[subprocess.Popen]) -> None:
    for helper in helpers:
        if helper.poll() is None:
            helper.send_signal(signal.SIGTERM)
    for helper in helpers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            helper.wait(timeout=60)
