"""python -m bench.ablation --study depth: a study's variants x seeds, tracked in MLflow.

The grid is an Optuna study whose queue holds one trial per point, enqueued once; any number of
workers (this command started again, here or on another machine with --storage) split it, and
running the command again skips what finished and resumes what was cut off.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.markup import escape
from rich.table import Table

from bench import data, report, runner, studies
from bench.config import RunConfig
from bench.errors import BenchError, cli
from bench.progress import console, out
from bench.tracking import Tracker
from bench.train import add_config_flags, given_settings

# Chosen per point of the grid, so they are not overrides of a study's settings.
NOT_OVERRIDES = ("seed", "budget")
LIVE = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)


class AblationJob(runner.Job):
    points: dict[str, studies.Point]

    def claim(self) -> optuna.Trial | None:
        done = self.completed()

        def ready(trial) -> bool:  # an init_from_a run waits until its vgg-a run has finished
            point = self.points.get(trial.user_attrs.get("point"))
            return point is not None and (not point.config.init_from_a or point.config.a_config.hash in done)

        return runner.pop_waiting(self.study, ready)

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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.ablation",
        description="Run a study's variants x seeds; every run, metric and checkpoint goes to MLflow.",
    )
    p.add_argument("--study", help="a name from studies/ (see --list) or the path of a study TOML file")
    p.add_argument("--list", action="store_true", help="show the studies with their variants and budgets")
    p.add_argument("--budget", help="smoke (tests), cpu (minutes on a laptop) or full (GPU); default: the study's")
    p.add_argument("--seeds", help="a count (3 means 0,1,2) or a list (0,5,7); default: the budget's")
    p.add_argument("--variants", help="comma-separated subset of the study's variants")
    runner.add_worker_flags(p, "runs")
    group = p.add_argument_group("overrides (any run setting, applied to every variant)")
    add_config_flags(group, defaults=False, exclude=NOT_OVERRIDES)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        out.print(studies_table())
        return 0
    if not args.study:
        raise BenchError("say which study to run: --study NAME (python -m bench.ablation --list shows them)")
    runner.check_workers(args)
    study = studies.load(args.study)
    if not study.variants:
        raise BenchError(f"study {study.name!r} has no variants, only a search: python -m bench.search --study {study.name}")
    overrides = RunConfig.typed({**{k: v for k, v in given_settings(args).items() if k not in NOT_OVERRIDES},
                                 **runner.run_settings(args)})
    seeds = studies.parse_seeds(args.seeds) if args.seeds else None
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    budget = study.budget(args.budget)
    budget.check_needs(overrides)
    points = a_runs_first(study.grid(args.budget, overrides, seeds, variants))
    label = points[0].config.budget

    # Everything that can be wrong is checked before anything is recorded.
    runner.check_processes(points[0].config, args)
    check_data(points, args.data_dir)
    tracker = Tracker(args.tracking_uri)
    storage = runner.open_storage(args.storage)
    if not args.quiet:
        announce(study, budget, points, args)
    with runner.storage_lock(args.storage):
        optuna_study, experiment_id, parent_id = runner.open_study(
            f"{study.name}-{label}", args.storage, tracker, study.name,
            {"bench.budget": label, "bench.dataset": points[0].config.dataset, "bench.kind": "ablation"},
            storage=storage,
        )
        job = AblationJob(study.name, optuna_study.study_name, optuna_study, tracker, experiment_id, parent_id)
        job.points = {p.config.hash: p for p in points}
        job.top_up()

    helpers = runner.spawn_helpers("bench.ablation", argv, args.workers - 1)
    try:
        runner.work(job, checkpoint_root=Path(args.checkpoint_root), data_dir=args.data_dir,
                    quiet=args.quiet, helpers=helpers)
    finally:
        runner.stop_helpers(helpers)
    if args.quiet:
        return 0 if job.all_finished() else 1

    frame = report.runs_frame(tracker, experiment_id, budget=label, hashes=set(job.points))
    out.print(report.variant_table(frame, title=escape(f"{study.name} [{label}] on {points[0].config.dataset}"),
                                       order=list(study.variants)))
    console.print(f"MLflow store: {tracker.uri}; browse it with: [bold]{tracker.ui_command}[/]")
    for failure in job.failures:
        console.print(f"[red]failed:[/] {failure}")
    if not job.all_finished():
        missing = len(job.points) - job.done()
        console.print(f"[yellow]{missing} run(s) not complete[/]: run the same command again to resume them")
        return 1
    return 0


def a_runs_first(points: list[studies.Point]) -> list[studies.Point]:
    """The grid with the vgg-a runs that init_from_a runs start from put first; each must be in it."""
    hashes = {p.config.hash for p in points}
    needed = {p.config.a_config.hash: p for p in points if p.config.init_from_a}
    for a_hash, point in needed.items():
        if a_hash not in hashes:
            raise BenchError(f"{point.key} starts from a trained vgg-a (init_from_a), but that run is not in "
                             "this grid: add vgg-a (without init_from_a) to the study's variants or to --variants")
    return sorted(points, key=lambda p: p.config.hash not in needed)


def check_data(points: list[studies.Point], data_dir: str | None) -> None:
    """Load each dataset the grid needs once, so a missing one fails before any run is recorded."""
    data_fields = ("dataset", "image_size", "subset", "train_scale", "test_scales", "data_holder")
    needs = {tuple(getattr(p.config, f) for f in data_fields): p.config for p in points}
    for config in needs.values():
        data.open_run(config.replace(loader_workers=0), data_dir=data_dir)


def announce(study: studies.Study, budget: studies.Budget, points: list[studies.Point], args) -> None:
    config = points[0].config
    others = [b for b in study.budgets if b != budget.name]
    origin = "chosen" if args.budget else "the default"
    variants = sorted({p.variant for p in points}, key=list(study.variants).index)
    console.print(
        f"[bold]{study.name}[/]: {study.description}\n"
        f"budget [bold]{escape(config.budget)}[/] ({origin}; others: {', '.join(others) or 'none'}): {budget.description}\n"
        f"{len(points)} runs = {len(variants)} variants x {len(points) // len(variants)} seeds on "
        f"{config.dataset} (subset {config.subset or 'all'}, {config.epochs} epochs, width {config.width}, "
        f"batch {config.batch_size}, device {config.device})"
    )


def studies_table() -> Table:
    table = Table(title="studies (python -m bench.ablation --study NAME [--budget B])")
    for column in ("study", "variants", "budgets (default first)", "description"):
        table.add_column(column)
    for name in studies.names():
        study = studies.load(name)
        budgets = [study.default_budget] + [b for b in study.budgets if b != study.default_budget]
        budgets = [f"{b} (needs {study.budgets[b].needs})" if study.budgets[b].needs else b for b in budgets]
        kind = ", ".join(study.variants) if study.variants else "(search only)"
        table.add_row(name, kind, ", ".join(budgets), study.description)
    return table


if __name__ == "__main__":
    cli(main)
