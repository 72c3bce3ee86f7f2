"""A study's grid (variants x seeds) as a runner job: one Optuna trial per point, enqueued once.

Any number of workers (the ablation command started again, here or on another machine with
--storage) split the grid; running it again skips what finished and resumes what was cut off.
Used by `python -m bench.ablation` and by the benchmark's tracking-overhead mode.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from bench import data, runner, studies
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

    def top_up(self) -> int:
        """Enqueue every point that has no complete, waiting or running trial (call under the lock)."""
        present = {t.user_attrs.get("point") for t in self.study.get_trials(deepcopy=False, states=LIVE)}
        missing = [key for key in self.points if key not in present]
        for key in missing:
            point = self.points[key]
            self.study.enqueue_trial(
                {}, user_attrs={"point": key, "variant": point.variant, "seed": point.seed}
            )
        return len(missing)

    def completed(self) -> set[str]:
        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return {t.user_attrs.get("point") for t in trials} & set(self.points)

    def total(self) -> int:
        return len(self.points)

    def done(self) -> int:
        return len(self.completed())

    def all_finished(self) -> bool:
        return self.completed() == set(self.points)


def open_grid(study: studies.Study, points: list[studies.Point], tracker: Tracker, storage_url: str | None,
              storage=None) -> GridJob:
    """The grid's Optuna study and MLflow parent run, created or loaded, with every missing point enqueued."""
    label = points[0].config.budget
    with runner.storage_lock(storage_url):
        optuna_study, experiment_id, parent_id = runner.open_study(
            f"{study.name}-{label}", storage_url, tracker, study.name,
            {"bench.budget": label, "bench.dataset": points[0].config.dataset, "bench.kind": "ablation"},
            storage=storage,
        )
        job = GridJob(study.name, optuna_study.study_name, optuna_study, tracker, experiment_id, parent_id)
        job.points = {p.config.hash: p for p in points}
        job.top_up()
    return job


def check_data(points: list[studies.Point], data_dir: str | None) -> None:
    """Load each dataset the grid needs once, so a missing one fails before any run is recorded."""
    needs = {(p.config.dataset, p.config.image_size, p.config.subset) for p in points}
    for dataset, image_size, subset in sorted(needs, key=str):
        data.load(dataset, data_dir=data_dir, image_size=image_size, subset=subset)
