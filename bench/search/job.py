"""A search's trials: where they come from, and how they are counted.

`--trials N` is the total the study should hold, not N more: every trial counts (complete, pruned,
failed, running or queued) except a trial whose worker died and which was queued again, since its
retry stands in for it. Counting and asking happen under the storage's lock, so any number of
workers stop at exactly N. A retry has the dead trial's config, so it resumes that trial's MLflow
run and checkpoint. A proposal that repeats an earlier trial's config (small discrete spaces) is
not trained again: it gets that trial's outcome and a `repeat_of` attribute, and no run of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bench.config import RunConfig
from bench.run import optuna_storage
from bench.run.job import REFILL_OF, Job
from bench.search.space import Plan


def standing(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that count toward --trials: all but those a retry (their re-queued copy) replaced."""
    trials = study.get_trials(deepcopy=False)
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    return [t for t in trials if t.number not in replaced]


@dataclass(kw_only=True)
class SearchJob(Job):
    """Trials the plan's sampler proposes, until the study holds as many as the plan wants."""

    plan: Plan
    settings: dict[str, Any]  # every RunConfig value the trials share, the budget label included
    deadline: float | None = None  # time.monotonic() after which no trial is claimed
    prune: bool = True

    def claim(self) -> optuna.Trial | None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            return None
        # Count and ask as one step, so that workers together stop at exactly --trials. ask() pops
        # a queued trial first (a dead worker's, queued again), else samples a new one.
        with optuna_storage.storage_lock(self.storage_url):
            while (
                self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                or len(standing(self.study)) < self.plan.wanted
            ):
                trial = self.study.ask()
                if not self.settle_repeat(trial):
                    return trial
        return None

    def settle_repeat(self, trial: optuna.Trial) -> bool:
        """Tell Optuna the outcome of a proposal that repeats an earlier trial, without training it.

        A run is its config: a repeat would share the earlier trial's MLflow run and checkpoint.
        Samplers propose repeats on spaces with few discrete values.
        """
        config_hash = self.describe(trial)[0].hash  # samples the trial's params now
        trial.set_user_attr("config_hash", config_hash)
        twin = next(
            (
                t
                for t in standing(self.study)
                if t.user_attrs.get("config_hash") == config_hash
                and t.number != trial.number
                and "repeat_of" not in t.user_attrs
            ),
            None,
        )
        if twin is None:
            return False
        trial.set_user_attr("repeat_of", twin.number)
        if twin.state == TrialState.COMPLETE:
            self.study.tell(trial, twin.value)
        else:  # pruned, failed, or in training by another worker now
            self.study.tell(trial, state=TrialState.PRUNED if twin.state == TrialState.PRUNED else TrialState.FAIL)
        return True

    def refill(self) -> int:
        """Queue again each complete trial whose MLflow run is gone (the store was deleted or replaced),
        as a copy that stands in for it (call under the lock); returns how many.

        The copy has the trial's params, so it resumes that run's checkpoint and fills the store
        without training again; it is not pruned (it completed once). As ablations refill theirs.
        """
        in_mlflow = self.tracker.finished_hashes(self.experiment_id)
        lost = [
            t
            for t in standing(self.study)
            if t.state == TrialState.COMPLETE
            and "mlflow_run_id" in t.user_attrs
            and t.user_attrs.get("config_hash") not in in_mlflow
        ]
        for trial in lost:
            history = [*trial.system_attrs.get("retry_history", ()), trial.number]
            self.study.add_trial(
                optuna.trial.create_trial(
                    state=TrialState.WAITING,
                    params=trial.params,
                    distributions=trial.distributions,
                    user_attrs={REFILL_OF: trial.number},
                    system_attrs={"retry_history": history},
                )
            )
        return len(lost)

    def describe(self, trial: optuna.Trial):
        config = RunConfig.from_dict({**self.settings, **self.plan.sample(trial)})
        return config, f"trial {trial.number}", {"study": self.experiment_name}

    def total(self) -> int:
        return self.plan.wanted

    def all_finished(self) -> bool:
        """No trial failed, in this worker or any other (a pruned one is the search at work)."""
        return not self.failures and not any(t.state == TrialState.FAIL for t in standing(self.study))

    def done(self) -> int:
        return sum(t.state.is_finished() for t in standing(self.study))

    def progress_info(self) -> str:
        counts = tally(self.study)
        text = (
            f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
            f"{counts[TrialState.FAIL]} failed"
        )
        best = best_trial(self.study)
        if best is not None:
            text += f"  best {best.value:.4f} (trial {best.number})"
        return text


def tally(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in standing(study):
        counts[trial.state] += 1
    return counts


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = [t for t in standing(study) if t.state == TrialState.COMPLETE]
    return max(complete, key=lambda t: t.value) if complete else None
