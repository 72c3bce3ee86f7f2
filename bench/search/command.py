"""python -m bench.search --study lr-wd: an Optuna search over a study's space, every trial in MLflow.

The space is the study file's [search] table (bench.search.space). Trials come from the runner
(bench.run.runner), as for ablations: the Optuna study NAME-search-LABEL in the storage is the queue
(bench.search.job says how trials are claimed and counted); each trial is one MLflow child run
named `trial N` under the parent run of the study at that budget, reporting validation accuracy
every epoch so the pruner can stop it (a pruned run is KILLED with tag bench.state=pruned, its
curve kept). When no trial is left running or queued, the last worker logs the search's summary
on the parent run (bench.search.summary).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.markup import escape

from bench import cli
from bench.config import RunConfig
from bench.errors import BenchError, redact
from bench.progress import console  # notes on stderr, results on stdout
from bench.run import optuna_storage, parent_runs, preflight, runner, studies
from bench.search.checks import corner_configs
from bench.search.job import SearchJob, standing
from bench.search.space import Plan, load_plan
from bench.search.summary import log_summary, print_outcome
from bench.tracking import Tracker

NOT_OVERRIDES = ("budget",)  # the budget label is made from the overrides


def parser() -> argparse.ArgumentParser:
    p = cli.study_parser(
        cli.SEARCH,
        "Search a study's [search] space with Optuna; every trial, curve and checkpoint goes to MLflow.",
        listing="show the studies that have a search, with their spaces",
    )
    p.add_argument("--trials", type=int, help="the total number of trials the study should hold (default: the study's)")
    p.add_argument("--timeout", type=float, help="stop claiming new trials after this many seconds")
    cli.add_study_flags(
        p, "trials", "overrides (any run setting the search does not sample, applied to every trial)", NOT_OVERRIDES
    )
    return p


def main(argv: list[str] | None = None) -> int:
    opened = cli.open_study_command(cli.SEARCH, parser(), argv, NOT_OVERRIDES)
    if opened is None:
        return 0
    args, study, overrides = opened
    budget, plan, settings = chosen_plan(study, args, overrides)
    shared_config = RunConfig.from_dict(settings)  # what every trial has before sampling
    cli.check_processes(shared_config, args)
    edges = corner_configs(plan, shared_config)  # every combination of the space's extremes
    preflight.check([shared_config, *edges], data_dir=args.data_dir, checkpoint_root=Path(args.checkpoint_root))

    tracker = Tracker(args.tracking_uri)
    storage = optuna_storage.open_storage(args.storage)  # a bad URL fails here in one line, password hidden
    job = open_job(study, budget, plan, settings, args, tracker, storage, cli.command_line(cli.SEARCH, argv))
    if not args.quiet:
        announce(study, budget, plan, settings, len(standing(job.study)), args)

    runner.work_together(
        job,
        "bench.search",
        argv,
        args.workers,
        checkpoint_root=Path(args.checkpoint_root),
        data_dir=args.data_dir,
        quiet=args.quiet,
    )
    if args.quiet:  # a helper: the worker that started it reports
        return 0 if job.all_finished() else 1
    return wrap_up(job, plan, args)


def chosen_plan(
    study: studies.Study, args: argparse.Namespace, overrides: dict[str, Any]
) -> tuple[studies.Budget, Plan, dict[str, Any]]:
    """The budget, the [search] plan at it, and the settings every trial shares (budget label included)."""
    shared, label = study.settings(args.budget, overrides)
    budget = study.budget(args.budget)
    settings = {**shared, **overrides, "budget": label}  # a trial trains one seed: the settings' (0 unless set)
    plan = load_plan(study, budget.name, settings, trials=args.trials, timeout=args.timeout)
    searched = sorted(set(overrides) & set(plan.space))
    if searched:
        raise BenchError(
            f"--{searched[0].replace('_', '-')} is sampled by this search; drop the flag, "
            f"or copy the study and take {searched[0]} out of its [search.space]"
        )
    return budget, plan, settings


def open_job(
    study: studies.Study,
    budget: studies.Budget,
    plan: Plan,
    settings: dict[str, Any],
    args: argparse.Namespace,
    tracker: Tracker,
    storage,
    command: str,
) -> SearchJob:
    """The search's Optuna study (its sampler re-seeded for this worker) and its described MLflow parent run."""
    label, shared_config = settings["budget"], RunConfig.from_dict(settings)
    name = f"{study.name}-search-{label}"
    with optuna_storage.storage_lock(args.storage):
        optuna_study, experiment_id, parent_id = parent_runs.open_study(
            name,
            args.storage,
            tracker,
            study.name,
            {
                "bench.budget": label,
                "bench.dataset": shared_config.dataset,
                "bench.kind": "search",
                "bench.space": plan.space_text,
            },
            sampler=plan.make_sampler(),
            pruner=plan.make_pruner(shared_config.epochs),
            storage=storage,
        )
        _same_space(optuna_study, plan, args.storage)
        starts = optuna_study.user_attrs.get("worker_starts", 0)
        optuna_study.set_user_attr("worker_starts", starts + 1)
        if starts and plan.sampler.get("seed") is not None:
            optuna_study.sampler = plan.make_sampler(worker_start=starts)
        job = SearchJob(
            experiment_name=study.name,
            optuna_name=name,
            study=optuna_study,
            tracker=tracker,
            experiment_id=experiment_id,
            parent_run_id=parent_id,
            storage=storage,
            storage_url=args.storage,
            system_metrics=args.system_metrics,
            plan=plan,
            settings=settings,
            deadline=time.monotonic() + plan.timeout if plan.timeout else None,
        )
        lost = job.refill()
        tracker.describe_parent(
            parent_id,
            (
                f"**{study.name}** search: {study.description}\n\nBudget `{label}`: {budget.description}\n\n"
                f"Space: {plan.space_text}; {plan.wanted} trials, sampler "
                f"{plan.sampler['name']}, pruner {plan.pruner['name']}, maximising validation accuracy.\n\n"
                f"Command: `{command}`"
            ),
            {k: v for k, v in shared_config.to_dict().items() if k not in plan.space},
        )
    if lost:
        console.print(
            f"[yellow]note:[/] {lost} trial(s) complete in Optuna's "
            f"{escape(optuna_storage.describe_storage(args.storage))} have no finished run in MLflow "
            f"{escape(redact(tracker.uri))}: queued again"
        )
    return job


def wrap_up(job: SearchJob, plan: Plan, args: argparse.Namespace) -> int:
    """The summary on the parent run once no trial is left anywhere, the outcome here; the exit code."""
    notes = []
    busy = job.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    if busy:
        notes.append(
            f"{len(busy)} trial(s) still running or queued elsewhere: the last worker to finish logs the summary"
        )
    else:
        notes += log_summary(job)
    print_outcome(job.study, plan.wanted)
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(
        f"MLflow store: {escape(redact(job.tracker.uri))}; browse it with: [bold]{escape(job.tracker.ui_command)}[/]"
    )
    console.print(f"Optuna study {job.optuna_name}: [bold]{escape(dashboard_command(args.storage))}[/]")
    for failure in job.failures:
        console.print(f"[red]failed:[/] {escape(failure)}")
    return 0 if job.all_finished() else 1


def _same_space(study: optuna.Study, plan: Plan, storage: str | None) -> None:
    recorded = study.user_attrs.get("search_space")
    if recorded is None:
        study.set_user_attr("search_space", plan.fingerprint)
    elif recorded != plan.fingerprint:
        raise BenchError(
            f"Optuna study {study.study_name} in {optuna_storage.describe_storage(storage)} was started with another "
            "search space: its trials would not compare; search the new space under another --storage "
            "(or another budget label, e.g. with an override)"
        )


def announce(
    study: studies.Study, budget: studies.Budget, plan: Plan, settings: dict[str, Any], present: int, args
) -> None:
    config = RunConfig.from_dict(settings)
    options = lambda spec: ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")  # noqa: E731
    timeout = f", stop claiming after {plan.timeout:g} s" if plan.timeout else ""
    cli.announce(
        study,
        budget,
        config.budget,
        bool(args.budget),
        f"{plan.wanted} trials in all ({present} in the study already{timeout}) of {config.model}"
        f"{'-bn' if config.batch_norm else ''} on {config.dataset} (subset {config.subset or 'all'}, "
        f"{config.epochs} epochs, "
        f"width {config.width}, batch {config.batch_size}, device {config.device}), maximising validation accuracy\n"
        f"space: {escape(plan.space_text)}\n"
        f"sampler {plan.sampler['name']}({options(plan.sampler)}), "
        f"pruner {plan.pruner['name']}({options(plan.pruner)}), "
        f"storage {escape(optuna_storage.describe_storage(args.storage))}",
    )


def dashboard_command(storage: str | None) -> str:
    url = storage or str(optuna_storage.DEFAULT_STORAGE)
    shown = redact(url)
    hint = " (put the password back where *** is)" if shown != url else ""
    return f"optuna-dashboard {shown}{hint}"
