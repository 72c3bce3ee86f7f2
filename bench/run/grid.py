"""A study's grid (variants x seeds) as the queue of an Optuna study: AblationJob enqueues each point once,
holds an init_from_a point back until its vgg-a run is complete, and records each trial's variant and seed
as params under distributions that stay the same for the study's life."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from bench.errors import BenchError
from bench.run import optuna_storage, studies
from bench.run.job import Job, claim_waiting

LIVE = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)


@dataclass(kw_only=True)
class AblationJob(Job):
    """The grid as Optuna trials whose params are `variant` (categorical) and `seed` (an int range
    over the grid's seeds), so that the dashboard's history, slice, contour, parallel-coordinate
    and importance views work as for a search."""

    points: dict[str, studies.Point]  # by config hash
    variants: tuple[str, ...]  # every variant of the study file: one distribution for all trials
    label: str  # the budget label
    point_for: Callable[[str, int], studies.Point]  # a point another worker queued, with these settings
    seed_distribution: BaseDistribution  # see seed_distribution()
    run_tags: dict[str, Any]  # every run's tags besides study, variant and seed (the UI's Source)
    deferred: set[str] = field(default_factory=set)  # init_from_a points held back until their vgg-a run is complete

    def claim(self) -> optuna.Trial | None:
        if self.deferred:  # init_from_a points join the queue once their vgg-a run is complete
            with optuna_storage.storage_lock(self.storage_url):
                latest, done = self.latest_trials(), self.completed()
                for key in sorted(self.deferred):
                    if self.ready(key, done):
                        self.deferred.discard(key)
                        if key not in latest or latest[key].state not in LIVE:  # not queued by another worker
                            self.enqueue(key)
        return claim_waiting(self)

    def ready(self, key: str, done: set[str]) -> bool:
        """Whether a point can train now: an init_from_a run needs its vgg-a run (when in the grid) done."""
        config = self.points[key].config
        return not config.init_from_a or config.a_config.hash not in self.points or config.a_config.hash in done

    def describe(self, trial: optuna.Trial):
        variant = trial.suggest_categorical("variant", self.variants)  # the queued point's, fixed
        seed = suggest_seed(trial, self.seed_distribution)
        point = self.points.get(trial.user_attrs.get("point")) or self.point_for(variant, seed)
        tags = {"study": self.experiment_name, "variant": point.variant, "seed": point.seed, **self.run_tags}
        return point.config, point.key, tags

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
        done = {key for key, t in latest.items() if t.state == TrialState.COMPLETE} - set(lost)
        self.deferred = {key for key in missing if not self.ready(key, done)}
        for key in missing:
            if key not in self.deferred:
                self.enqueue(key)
        return len(missing), len(lost)

    def enqueue(self, key: str) -> None:
        point = self.points[key]
        self.study.enqueue_trial(
            {"variant": point.variant, "seed": point.seed},
            user_attrs={"point": key, "variant": point.variant, "seed": point.seed},
        )

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


def a_runs_first(points: list[studies.Point]) -> list[studies.Point]:
    """The grid with the vgg-a runs that init_from_a runs start from put first; each must be in it."""
    hashes = {p.config.hash for p in points}
    needed = {p.config.a_config.hash: p for p in points if p.config.init_from_a}
    for a_hash, point in needed.items():
        if a_hash not in hashes:
            raise BenchError(
                f"{point.key} starts from a trained vgg-a (init_from_a), but that run is not in "
                "this grid: add vgg-a (without init_from_a) to the study's variants or to --variants"
            )
    return sorted(points, key=lambda p: p.config.hash not in needed)


def check_distributions(
    storage, name: str, storage_url: str | None, variants: tuple[str, ...], seeds: list[int]
) -> BaseDistribution:
    """An Optuna study keeps one distribution per param: a study file whose variants changed
    since its trials ran cannot add trials to it. Checked before anything is recorded.
    Returns the distribution the grid's `seed` params take (seed_distribution)."""
    recorded: dict[str, BaseDistribution] = {}
    if name in optuna.get_all_study_names(storage):
        for trial in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
            for param, distribution in trial.distributions.items():
                recorded.setdefault(param, distribution)
    where = f"Optuna study {name} in {optuna_storage.describe_storage(storage_url)}"
    ours = CategoricalDistribution(variants)
    if recorded.get("variant", ours) != ours:
        raise BenchError(
            f"{where} was started with variant choices {list(recorded['variant'].choices)}, the study file "
            f"now has {list(variants)}: run it under another --storage, or restore the study file's variants"
        )
    return seed_distribution(recorded.get("seed"), seeds, where)


def seed_distribution(recorded: BaseDistribution | None, seeds: list[int], where: str) -> BaseDistribution:
    """The study's own seeds as an int range, which the dashboard draws as a numeric axis.

    A study begun when every ablation's seed was a categorical of 0..99 keeps that one: Optuna
    refuses another kind of distribution for a param that trials already hold, so it resumes.
    """
    if isinstance(recorded, CategoricalDistribution):
        outside = sorted(set(seeds) - set(recorded.choices))
        if outside:
            raise BenchError(
                f"seed {outside[0]} is not among the seeds {where} takes (0..99, as it was "
                "started with): choose seeds in that range, or run it under another --storage"
            )
        return recorded
    return IntDistribution(min(seeds), max(seeds))


def suggest_seed(trial: optuna.Trial, distribution: BaseDistribution) -> int:
    """The queued point's seed, recorded under `distribution`, widened to hold a seed that another
    worker's grid (other --seeds) queued, so that Optuna records it without an out-of-range warning."""
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical("seed", distribution.choices)
    queued = trial.user_attrs.get("seed", distribution.low)
    return trial.suggest_int("seed", min(distribution.low, queued), max(distribution.high, queued))
