"""A job: a study being worked on (its Optuna study, MLflow experiment and parent run), and where its
trials come from. The runner (bench.run.runner) claims and runs them; an ablation's grid (bench.run.grid)
and a search (bench.search.job) are its kinds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.config import RunConfig
from bench.run.optuna_storage import storage_lock
from bench.tracking import Tracker

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
REFILL_OF = "refill_of"  # user attribute of a complete trial's copy queued to refill a lost MLflow store


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
