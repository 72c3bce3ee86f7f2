"""python -m bench.ablation --study depth: a study's variants x seeds, tracked in MLflow.

The grid is an Optuna study whose queue holds one trial per point, enqueued once; any number of
workers (this command started again, here or on another machine with --storage) split it, and
running the command again skips what finished and resumes what was cut off.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from bench import grid, preflight, report, runner, studies
from bench.config import RunConfig
from bench.errors import BenchError, cli, redact
from bench.progress import console, out
from bench.tracking import Tracker
from bench.train import add_config_flags, given_settings

# Chosen per point of the grid, so they are not overrides of a study's settings.
NOT_OVERRIDES = ("seed", "budget")


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
        good, bad = studies.load_all()
        out.print(studies_table(good))
        for problem in bad:
            console.print(f"[red]skipped:[/] {escape(problem)}", soft_wrap=True)
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
    points = study.grid(args.budget, overrides, seeds, variants)
    budget = study.budget(args.budget)
    label = points[0].config.budget

    # Everything that can be wrong is checked before anything is recorded.
    runner.check_processes(points[0].config, args)
    preflight.check([p.config for p in points], data_dir=args.data_dir, checkpoint_root=Path(args.checkpoint_root))
    tracker = Tracker(args.tracking_uri)
    storage = runner.open_storage(args.storage)
    if not args.quiet:
        announce(study, budget, points, args)
    job, lost = grid.open_grid(study, points, tracker, args.storage, storage)
    if lost:
        console.print(f"[yellow]note:[/] {lost} run(s) complete in Optuna's {escape(runner.describe_storage(args.storage))} "
                      f"have no finished run in MLflow {escape(redact(tracker.uri))}: queued again")

    helpers = runner.spawn_helpers("bench.ablation", argv, args.workers - 1)
    try:
        runner.work(job, checkpoint_root=Path(args.checkpoint_root), data_dir=args.data_dir,
                    quiet=args.quiet, helpers=helpers)
    finally:
        runner.stop_helpers(helpers)
    if args.quiet:
        return 0 if job.all_finished() else 1

    frame = report.runs_frame(tracker, job.experiment_id, budget=label, hashes=set(job.points))
    out.print(report.variant_table(frame, title=escape(f"{study.name} [{label}] on {points[0].config.dataset}"),
                                       order=list(study.variants)))
    console.print(f"MLflow store: {escape(redact(tracker.uri))}; browse it with: [bold]{tracker.ui_command}[/]")
    for failure in job.failures:
        console.print(f"[red]failed:[/] {failure}")
    if not job.all_finished():
        missing = len(job.points) - job.done()
        console.print(f"[yellow]{missing} run(s) not complete[/]: run the same command again to resume them")
        return 1
    return 0


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


def studies_table(every: list[studies.Study]) -> Table:
    table = Table(title="studies (python -m bench.ablation --study NAME [--budget B])")
    for column in ("study", "variants", "budgets (default first)", "description"):
        table.add_column(column)
    for study in every:
        name = study.path.stem
        budgets = [study.default_budget] + [b for b in study.budgets if b != study.default_budget]
        kind = ", ".join(study.variants) if study.variants else "(search only)"
        table.add_row(name, kind, ", ".join(budgets), study.description)
    return table


if __name__ == "__main__":
    cli(main)
