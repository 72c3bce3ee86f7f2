"""One trial end to end: its MLflow run started (or a finished run of the same config reused), trained
with bench.engine.train.fit (or as a torchrun of world_size processes), logged, and its outcome told
to Optuna; a pruned, interrupted or failed run is marked so in both."""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from bench.config import RunConfig
from bench.engine.train import fit
from bench.errors import BenchError, RunFailed, one_line
from bench.run import launch, outage, owners
from bench.run.job import REFILL_OF, Job


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
