"""Checks of a search plan that need more than its table: every corner of the space against RunConfig
(and, through corner_configs, against the data in bench.search's preflight), and the sampler and
pruner tried on made-up trials, so that nothing that cannot run is recorded as FAILED trials."""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import optuna

from bench.config import RunConfig
from bench.errors import BenchError, one_line

if TYPE_CHECKING:
    from bench.search.space import Plan

MAX_CORNERS = 4096  # combinations of extremes checked up front; past that, each edge alone
DRY_TRIALS = 4  # made-up trials put through the sampler and pruner before anything is recorded


def corners(plan: Plan) -> list[dict[str, Any]]:
    """Every combination of the space's extremes (at most MAX_CORNERS, else each edge alone): settings
    that only fail together, a subset too small for a batch size, are found before anything runs."""
    free = [p for p in plan.space.values() if p.by is None]
    if math.prod(len(p.extremes()) for p in free) > MAX_CORNERS:
        return [{p.name: v} for p in plan.space.values() for v in p.extremes()]
    ranged = [p for p in plan.space.values() if p.by is not None]
    found = []
    for values in itertools.product(*(p.extremes() for p in free)):
        chosen = dict(zip((p.name for p in free), values))
        for bounds in itertools.product(*(p.ranges[str(chosen[p.by])] for p in ranged)):
            found.append({**chosen, **dict(zip((p.name for p in ranged), bounds))})
    return found


def check_against_config(plan: Plan, settings: dict[str, Any], where: str) -> None:
    """Each edge of the space, and each combination of edges, must make a valid RunConfig, or the
    search fails hours in (bench.search then opens the data of each: corner_configs)."""
    for param in plan.space.values():
        for value in param.extremes():
            try:
                RunConfig.from_dict({**settings, param.name: value})
            except BenchError as exc:
                raise BenchError(f"{where}.space.{param.name}: {value!r} cannot be trained: {exc}") from None
    for corner in corners(plan):
        try:
            RunConfig.from_dict({**settings, **corner})
        except BenchError as exc:
            shown = ", ".join(f"{k} = {v!r}" for k, v in corner.items())
            raise BenchError(f"{where}.space: the corner {shown} cannot be trained: {exc}") from None


def corner_configs(plan: Plan, shared: RunConfig) -> list[RunConfig]:
    """The run settings at every corner of the space, for the checks that need the data (preflight)."""
    return [shared.replace(**corner) for corner in corners(plan)]


def check_components(plan: Plan, settings: dict[str, Any], where: str) -> None:
    if plan.sampler["name"] == "grid":
        for param in plan.space.values():
            if param.by is not None or (param.type == "float" and not param.step):
                raise BenchError(
                    f"{where}.space.{param.name}: the grid sampler needs a finite set of "
                    'values: give it choices (type = "categorical") or a step, and no by'
                )
    try:
        plan.make_sampler()
        plan.make_pruner(RunConfig.from_dict(settings).epochs)
    except (TypeError, ValueError) as exc:
        raise BenchError(
            f"{where}: sampler {plan.sampler} or pruner {plan.pruner} rejected its options: {exc}"
        ) from None
    dry_run(plan, RunConfig.from_dict(settings).epochs, where)


def dry_run(plan: Plan, epochs: int, where: str) -> None:
    """Made-up trials through the sampler and pruner, in memory: options Optuna takes but cannot run
    with (hyperband min_resource = 0 or reduction_factor = 1: ZeroDivisionError) fail here, once,
    not in every trial of the search."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "trial finished" lines for made-up trials
    try:
        study = optuna.create_study(direction="maximize", sampler=plan.make_sampler(), pruner=plan.make_pruner(epochs))
        for number in range(DRY_TRIALS):
            trial = study.ask()
            plan.sample(trial)
            for step in range(1, epochs + 1):
                trial.report(0.1 * number + step / (epochs + 1), step)
                if trial.should_prune():
                    break
            study.tell(trial, 0.1 * number)
    except Exception as exc:  # noqa: BLE001 - whatever Optuna raises, the options are what to fix
        raise BenchError(
            f"{where}: sampler {plan.sampler} and pruner {plan.pruner} cannot run a trial "
            f"({type(exc).__name__}: {one_line(exc)}); check their options against Optuna's "
            "documentation (hyperband: min_resource >= 1, reduction_factor >= 2)"
        ) from None
    finally:
        optuna.logging.set_verbosity(verbosity)
