"""python -m bench.ablation --study depth: a study's variants x seeds, tracked in MLflow.

The grid is an Optuna study whose queue holds one trial per point, enqueued once; any number of
workers (this command started again, here or on another machine with --storage) split it, and
running the command again skips what finished and resumes what was cut off.
The grid as that queue is bench.run.grid; this module is the command around it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.trial import TrialState
from rich.markup import escape

from bench import cli, errors
from bench.engine import record
from bench.engine.train import flops_per_image
from bench.errors import redact
from bench.progress import console, out
from bench.report import build as report_build
from bench.report.publish import DEFAULT_OUT as REPORT_DIR
from bench.report.publish import publish
from bench.report.read import runs_frame
from bench.report.render import variant_table
from bench.run import optuna_storage, parent_runs, preflight, runner, studies
from bench.run.grid import AblationJob, a_runs_first, check_distributions
from bench.tracking import Tracker, registry_name

# Chosen per point of the grid, so they are not overrides of a study's settings.
NOT_OVERRIDES = ("seed", "budget", "compute_scale")
# What the trial's value is, in the study's metadata (a study's metric name is set once, when made).
OBJECTIVE_NOTE = (
    "best_val_acc: the MLflow metric of the trial's run (user attr mlflow_run_id), its best "
    "validation accuracy over the epochs"
)
SOURCE = {record.SOURCE_NAME: f"python -m bench.{cli.ABLATION}"}  # the UI's Source, however it was started


def main(argv: list[str] | None = None) -> int:
    opened = cli.open_study_command(cli.ABLATION, parser(), argv, NOT_OVERRIDES)
    if opened is None:
        return 0
    args, study, overrides = opened
    budget, points = chosen_grid(study, args, overrides)
    command = cli.command_line(cli.ABLATION, argv)

    # Everything that can be wrong is checked before anything is recorded.
    cli.check_processes(points[0].config, args)
    preflight.check([p.config for p in points], data_dir=args.data_dir, checkpoint_root=Path(args.checkpoint_root))
    tracker = Tracker(args.tracking_uri)
    storage = optuna_storage.open_storage(args.storage)
    seeds = check_distributions(
        storage,
        f"{study.name}-{points[0].config.budget}",
        args.storage,
        tuple(study.variants),
        sorted({p.seed for p in points}),
    )
    if not args.quiet:
        announce(study, budget, points, args)
    job = open_job(
        study,
        budget,
        points,
        args,
        tracker,
        storage,
        command,
        seeds,
        point_for=lambda variant, seed: study.grid(args.budget, overrides, (seed,), [variant])[0],
    )

    if job.all_finished() and tracker.status(job.parent_run_id) == "FINISHED":
        # Nothing to train: the parent run is left as it was (its status, and its end time).
        if not args.quiet:
            console.print("every run of the study is complete: nothing to train")
    else:
        runner.work_together(
            job,
            "bench.ablation",
            argv,
            args.workers,
            data_dir=args.data_dir,
            checkpoint_root=Path(args.checkpoint_root),
            quiet=args.quiet,
        )
    if args.quiet:
        return 0 if job.all_finished() else 1
    return wrap_up(job, args, study, points, command)


def parser() -> argparse.ArgumentParser:
    p = cli.study_parser(
        cli.ABLATION,
        "Run a study's variants x seeds; every run, metric and checkpoint goes to MLflow.",
        listing="show the studies with their variants and budgets",
    )
    p.add_argument("--seeds", help="a count (3 means 0,1,2) or a list (0,5,7); default: the budget's")
    p.add_argument("--variants", help="comma-separated subset of the study's variants")
    p.add_argument(
        "--report-dir", default=REPORT_DIR, help="where the study's report goes at the end (default: reports/)"
    )
    cli.add_study_flags(p, "runs", "overrides (any run setting, applied to every variant)", NOT_OVERRIDES)
    return p


def chosen_grid(
    study: studies.Study, args: argparse.Namespace, overrides: dict[str, Any]
) -> tuple[studies.Budget, list[studies.Point]]:
    """The budget and the points of the grid that --budget, --seeds, --variants and the overrides choose."""
    seeds = studies.parse_seeds(args.seeds) if args.seeds else None
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    budget = study.budget(args.budget)
    budget.check_needs(overrides)
    points = a_runs_first(
        study.grid(
            args.budget,
            overrides,
            seeds,
            variants,
            flops_per_image=lambda config: flops_per_image(config, args.data_dir),
        )
    )
    return budget, points


def open_job(
    study: studies.Study,
    budget: studies.Budget,
    points: list[studies.Point],
    args: argparse.Namespace,
    tracker: Tracker,
    storage,
    command: str,
    seed_distribution: BaseDistribution,
    point_for: Callable[[str, int], studies.Point],
) -> AblationJob:
    """The study's Optuna study and MLflow parent run, described, with every missing point queued."""
    label = points[0].config.budget
    with optuna_storage.storage_lock(args.storage):
        optuna_study, experiment_id, parent_id = parent_runs.open_study(
            f"{study.name}-{label}",
            args.storage,
            tracker,
            study.name,
            {"bench.budget": label, "bench.dataset": points[0].config.dataset, "bench.kind": "ablation", **SOURCE},
            storage=storage,
        )
        job = AblationJob(
            experiment_name=study.name,
            optuna_name=optuna_study.study_name,
            study=optuna_study,
            tracker=tracker,
            experiment_id=experiment_id,
            parent_run_id=parent_id,
            storage=storage,
            storage_url=args.storage,
            system_metrics=args.system_metrics,
            points={p.config.hash: p for p in points},
            variants=tuple(study.variants),
            label=label,
            point_for=point_for,
            seed_distribution=seed_distribution,
            run_tags=SOURCE,
        )
        if "objective" not in optuna_study.user_attrs:
            optuna_study.set_user_attr("objective", OBJECTIVE_NOTE)
        tracker.describe_parent(parent_id, parent_description(study, budget, points, command), shared_settings(points))
        _, lost = job.top_up()
    if lost:
        console.print(
            f"[yellow]note:[/] {lost} run(s) complete in Optuna's "
            f"{escape(optuna_storage.describe_storage(args.storage))} "
            f"have no finished run in MLflow {escape(redact(tracker.uri))}: queued again"
        )
    return job


def wrap_up(
    job: AblationJob, args: argparse.Namespace, study: studies.Study, points: list[studies.Point], command: str
) -> int:
    """The variant table, the report once any run is complete, and what is left; the exit code."""
    tracker, label = job.tracker, job.label
    frame = runs_frame(tracker, job.experiment_id, budget=label, hashes=set(job.points))
    out.print(
        variant_table(
            frame, title=escape(f"{study.name} [{label}] on {points[0].config.dataset}"), order=list(study.variants)
        )
    )
    if job.done():
        finish(job, args, study, points, command)
    console.print(
        f"MLflow store: {escape(redact(tracker.uri))}; browse it with: [bold]{tracker.ui_command}[/], "
        f"then {tracker.runs_page(job.experiment_id)}"
    )
    for failure in job.failures:
        console.print(f"[red]failed:[/] {failure}")
    if not job.all_finished():
        missing = len(job.points) - job.done()
        console.print(f"[yellow]{missing} run(s) not complete[/]: run the same command again to resume them")
        return 1
    return 0


def finish(job: AblationJob, args, study: studies.Study, points: list[studies.Point], command: str) -> None:
    """The per-variant summary on the parent run, the study's report (md, csv, png) into reports/ and
    onto the parent run; its best run's model into the Model Registry as <study>-<budget>, alias `best`."""
    config = points[0].config
    job.tracker.log_variant_summary(job.parent_run_id, job.experiment_id, job.label)
    built = report_build.build(job.tracker, [args.study], job.label, config.dataset, command, args.tracking_uri)
    paths = publish(job.tracker, built, Path(args.report_dir))
    console.print(f"report: {', '.join(map(str, paths))} (also on the parent run under report/)")
    # A trial whose MLflow run is gone (a replaced store, trained again since) cannot be registered.
    recorded = [
        t
        for t in job.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if job.tracker.run_exists(t.user_attrs.get("mlflow_run_id", ""))
    ]
    best = max(recorded, key=lambda t: t.value)
    name = registry_name(f"{study.name}-{job.label}")
    version = job.tracker.register_best(name, best.user_attrs["mlflow_run_id"])
    console.print(
        f"best run by validation accuracy: {escape(best.user_attrs.get('variant', ''))} seed "
        f"{best.user_attrs.get('seed', '')}, registered as [bold]models:/{escape(name)}@best[/] (version {version})"
    )


def parent_description(study: studies.Study, budget: studies.Budget, points: list[studies.Point], command: str) -> str:
    variants = list(dict.fromkeys(p.variant for p in points))
    seeds = sorted({p.seed for p in points})
    return (
        f"**{study.name}**: {study.description}\n\n"
        f"Budget `{points[0].config.budget}`: {budget.description}\n\n"
        f"Variants: {', '.join(variants)}; seeds: {', '.join(map(str, seeds))} "
        f"({len(points)} runs on {points[0].config.dataset}).\n\n"
        f"Command: `{command}`"
    )


def shared_settings(points: list[studies.Point]) -> dict[str, Any]:
    """The run settings every point of the grid has in common (the variants change the rest)."""
    first = points[0].config.to_dict()
    return {k: v for k, v in first.items() if k != "seed" and all(p.config.to_dict()[k] == v for p in points[1:])}


def announce(study: studies.Study, budget: studies.Budget, points: list[studies.Point], args) -> None:
    config = points[0].config
    variants = sorted({p.variant for p in points}, key=list(study.variants).index)
    cli.announce(
        study,
        budget,
        config.budget,
        bool(args.budget),
        f"{len(points)} runs = {len(variants)} variants x {len(points) // len(variants)} seeds on "
        f"{config.dataset} (subset {config.subset or 'all'}, {epochs_text(points)}, width {config.width}, "
        f"batch {config.batch_size}, device {config.device})",
    )


def epochs_text(points: list[studies.Point]) -> str:
    """'5 epochs', or under equal compute each variant's share of the reference's training FLOPs."""
    config = points[0].config
    if config.compute == "epochs":
        return f"{config.epochs} epochs"
    each = {p.variant: p.config.train_epochs for p in points}
    return (
        f"equal training FLOPs: the reference's {config.epochs} epochs; "
        + ", ".join(f"{v} {e:.2f}" for v, e in each.items())
        + " epochs"
    )


if __name__ == "__main__":
    errors.cli(main)
