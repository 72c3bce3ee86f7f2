"""A study's grid (variants x seeds) as a runner job: one Optuna trial per point, enqueued once.

Any number of workers (the ablation command started again, here or on another machine with
--storage) split the grid; running it again skips what finished and resumes what was cut off.
Used by `python -m bench.ablation` and by the benchmark's tracking-overhead mode.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from bench import runner, studies
from bench.tracking import Tracker

LIVE = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)


class GridJob(runner.Job):
    points: dict[str, studies.Point]

    def claim(self) -> optuna.Trial | None:
        return runner.pop_waiting(self.study, lambda t: t.user_attrs.get("point") in self.points)

    def describe(self, trial: optuna.Trial):
        point = self.points[trial.user_attrs["point"]]
        tags = {"study": self.study_name, "variant": point.variant, "seed": point.seed}
        return point.config, f"{point.variant} seed={point.seed}", tags

    def top_up(self) -> tuple[int, int]:
        """Enqueue every point with no complete, waiting or running trial (call under the lock).

        A point Optuna holds complete but whose finished MLflow run is gone (the store was deleted
        or replaced) is queued again, so the store ends up holding the whole study.
        Returns (points enqueued, of which re-queued for a missing MLflow run).
        """
        latest = self.latest_trials()
        in_mlflow = self.tracker.finished_hashes(self.experiment_id)
        lost = [key for key, t in latest.items() if t.state == TrialState.COMPLETE and key not in in_mlflow]
        missing = [key for key in self.points if key not in latest or latest[key].state not in LIVE] + lost
        for key in missing:
            point = self.points[key]
            self.study.enqueue_trial(
                {}, user_attrs={"point": key, "variant": point.variant, "seed": point.seed}
            )
        return len(missing), len(lost)

    def latest_trials(self) -> dict[str, optuna.trial.FrozenTrial]:
        """Each point's newest trial: it alone says where the point stands."""
        latest = {}
        for trial in self.study.get_trials(deepcopy=False):  # in order of number
            if trial.user_attrs.get("point") in self.points:
                latest[trial.user_attrs["point"]] = trial
        return latest

    def completed(self) -> set[str]:
        return {key for key, t in self.latest_trials().items() if t.state == TrialState.COMPLETE}

    def total(self) -> int:
        return len(self.points)

    def done(self) -> int:
        return len(self.completed())

    def all_finished(self) -> bool:
        return self.completed() == set(self.points)


def open_grid(study: studies.Study, points: list[studies.Point], tracker: Tracker, storage_url: str | None,
              storage=None) -> tuple[GridJob, int]:
    """The grid's Optuna study and MLflow parent run, created or loaded, with every missing point enqueued.

    Returns the job and how many points were queued again because their MLflow run is gone.
    """
    label = points[0].config.budget
    with runner.storage_lock(storage_url):
        optuna_study, experiment_id, parent_id = runner.open_study(
            f"{study.name}-{label}", storage_url, tracker, study.name,
            {"bench.budget": label, "bench.dataset": points[0].config.dataset, "bench.kind": "ablation"},
            storage=storage,
        )
        job = GridJob(study.name, optuna_study.study_name, optuna_study, tracker, experiment_id, parent_id)
        job.points = {p.config.hash: p for p in points}
        _, lost = job.top_up()
    return job, lost

