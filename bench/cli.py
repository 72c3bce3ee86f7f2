"""The command-line plumbing the commands share.

One flag per RunConfig field, the worker flags of the study commands, an argparse parser whose
mistakes are one line (bench.errors.Parser), and the opening that `bench.ablation` and `bench.search` have in common:
list the studies, or load the chosen one and read the run settings typed as overrides.

Nothing here imports MLflow or Optuna: the benchmark's GPU suite runs where neither is installed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from typing import Any

from rich.markup import escape
from rich.table import Table

from bench.config import RunConfig
from bench.engine import distributed
from bench.errors import BenchError, Parser, redact
from bench.progress import console, out
from bench.run import budget_estimates, packing, studies
from bench.store_files import STATE_DIR

# The world size is how the run was started (torchrun's, or a study's --gpus-per-run), not a flag.
NOT_FLAGS = ("world_size",)
ABLATION, SEARCH = "ablation", "search"  # the two study commands: python -m bench.<kind>


# --- run settings -------------------------------------------------------------------------------


def add_config_flags(parser: argparse.ArgumentParser, *, defaults: bool = True, exclude=()) -> None:
    """One flag per RunConfig field (--batch-size, --bn/--no-bn, ...); values are coerced later."""
    for f in fields(RunConfig):
        if f.name in exclude or f.name in NOT_FLAGS:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if defaults else None
        if f.type in ("bool", bool):
            names = [flag, "--bn"] if f.name == "batch_norm" else [flag]
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, dest=f.name, default=default, metavar=f.name.upper())


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig settings a person typed on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name, None) is not None}


# --- the study commands' workers ----------------------------------------------------------------


def add_worker_flags(parser: argparse.ArgumentParser, unit: str) -> None:
    """The flags every study command shares: where the queue and the record are, how many workers."""
    parser.add_argument("--storage", help="Optuna storage URL shared by workers (default: a journal file in .bench/)")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )
    parser.add_argument(
        "--workers",
        type=worker_count,
        action=WorkerCounts,
        default=1,
        metavar="N|auto",
        help="worker processes on this machine (default 1); auto: as many runs as pack well "
        "onto the GPU, from its free memory and a short measurement of the first run "
        "(one on a CPU)",
    )
    parser.add_argument(
        "--gpus-per-run",
        type=int,
        default=1,
        metavar="N",
        help="train each run over N processes with torchrun (DDP): N GPUs each, or N CPU "
        "processes where there is no GPU; --workers counts such groups (default 1)",
    )
    parser.add_argument("--data-dir", help="where dataset files are (default: $BENCH_DATA, system location, download)")
    parser.add_argument(
        "--checkpoint-root",
        default=str(STATE_DIR / "checkpoints"),
        help=f"per-run checkpoint folders, used to resume cut-off {unit}",
    )
    parser.add_argument(
        "--no-system-metrics",
        dest="system_metrics",
        action="store_false",
        help="do not sample CPU, memory and GPU use into each run (MLflow's system/ metrics)",
    )
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)


def worker_count(text: str) -> int | str:
    """A --workers value: a count, or auto (bench.run.packing chooses the count)."""
    if text == packing.AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a count or 'auto', not {text!r}") from None


class WorkerCounts(argparse.Action):
    """--workers keeps the last value given, as before, and remembers every one: `auto` beside a
    count is a contradiction that check_workers refuses, not a choice to make silently."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        namespace.workers = value
        namespace.workers_given = [*getattr(namespace, "workers_given", []), value]


def check_workers(args: argparse.Namespace) -> None:
    given = getattr(args, "workers_given", [])
    counts = [v for v in given if v != packing.AUTO]
    if packing.AUTO in given and counts:
        raise BenchError(
            f"--workers auto chooses the count itself, but --workers {counts[-1]} fixes it too: give one of them"
        )
    if args.workers == packing.AUTO and args.gpus_per_run > 1:
        raise BenchError(
            f"--workers auto packs runs onto one GPU, but --gpus-per-run {args.gpus_per_run} "
            "spreads each run over several: give --workers N with --gpus-per-run"
        )
    if args.workers != packing.AUTO and args.workers < 1:
        raise BenchError(f"--workers must be at least 1, got {args.workers}")
    if args.gpus_per_run < 1:
        raise BenchError(f"--gpus-per-run must be at least 1, got {args.gpus_per_run}")


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings the worker flags imply: the world size of --gpus-per-run (an override, so
    runs over several processes carry it in their budget label and never mix with others)."""
    return {"world_size": args.gpus_per_run} if args.gpus_per_run > 1 else {}


def check_processes(config: RunConfig, args: argparse.Namespace) -> None:
    """What --workers x --gpus-per-run asks of this machine, checked before anything is recorded;
    --workers auto becomes the count it chooses for runs like `config` (the study's first)."""
    if args.workers == packing.AUTO:
        args.workers = packing.auto_workers(config, args.data_dir)
    distributed.check(config.world_size, config.device, config.sync_batch_norm, groups=args.workers)


# --- the opening of a study command -------------------------------------------------------------


def study_parser(kind: str, description: str, listing: str) -> argparse.ArgumentParser:
    """The parser of python -m bench.<kind> with the flags that choose a study and its budget."""
    p = Parser(prog=f"python -m bench.{kind}", description=description)
    p.add_argument("--study", help="a name from studies/ (see --list) or the path of a study TOML file")
    p.add_argument("--list", action="store_true", help=listing)
    p.add_argument("--budget", help="smoke (tests), cpu (minutes on a laptop) or full (GPU); default: the study's")
    return p


def add_study_flags(parser: argparse.ArgumentParser, unit: str, overrides: str, exclude: tuple[str, ...]) -> None:
    """After a study command's own flags: the worker flags, then every run setting as an override."""
    add_worker_flags(parser, unit)
    add_config_flags(parser.add_argument_group(overrides), defaults=False, exclude=exclude)


def open_study_command(
    kind: str, parser: argparse.ArgumentParser, argv: list[str] | None, not_overrides: tuple[str, ...]
):
    """Parse a study command's line: (args, study, overrides), or None once --list has been answered."""
    args = parser.parse_args(argv)
    if args.list:
        list_studies(kind)
        return None
    return (args, *chosen_study(args, kind, not_overrides))


def list_studies(kind: str) -> int:
    """--list: the studies `kind` can run as a table on stdout; a file that does not load, one line each."""
    good, bad = studies.load_all()
    out.print(studies_table(good, kind))
    for problem in bad:
        console.print(f"[red]skipped:[/] {escape(problem)}", soft_wrap=True)
    return 0


def studies_table(every: list[studies.Study], kind: str) -> Table:
    if kind == ABLATION:
        table = Table(title="studies (python -m bench.ablation --study NAME [--budget B])")
        shown = [(s, ", ".join(s.variants) if s.variants else "(search only)") for s in every]
    else:
        table = Table(title="searches (python -m bench.search --study NAME [--budget B] [--trials N])")
        shown = [(s, ", ".join(s.search.get("space", {}))) for s in every if s.search is not None]
    for column in ("study", "variants" if kind == ABLATION else "space", "budgets (default first)", "description"):
        table.add_column(column)
    for study, what in shown:
        names = [study.default_budget] + [b for b in study.budgets if b != study.default_budget]
        cells = ", ".join(budget_cell(study, b) for b in names)
        table.add_row(study.path.stem, what, cells, study.description)
    return table


def budget_cell(study: studies.Study, name: str) -> str:
    """A budget as --list shows it: what it needs typed, and a gpu budget's estimated minutes."""
    notes = [f"needs {study.budgets[name].needs}"] if study.budgets[name].needs else []
    if name == budget_estimates.GPU_BUDGET:
        notes.append(budget_estimates.estimate_text(budget_estimates.packed_estimate(study, name)))
    return f"{name} ({'; '.join(notes)})" if notes else name


def chosen_study(
    args: argparse.Namespace, kind: str, not_overrides: tuple[str, ...]
) -> tuple[studies.Study, dict[str, Any]]:
    """The study --study names, checked to be one `kind` can run, and the typed run-setting overrides."""
    if not args.study:
        verb = "run" if kind == ABLATION else "search"
        raise BenchError(f"say which study to {verb}: --study NAME (python -m bench.{kind} --list shows them)")
    check_workers(args)
    study = studies.load(args.study)
    if kind == ABLATION and not study.variants:
        raise BenchError(
            f"study {study.name!r} has no variants, only a search: python -m bench.search --study {study.name}"
        )
    if kind == SEARCH and study.search is None:
        raise BenchError(
            f"study {study.name!r} has no [search] table, only variants: python -m bench.ablation --study {study.name}"
        )
    typed = {k: v for k, v in given_settings(args).items() if k not in not_overrides}
    return study, RunConfig.typed({**typed, **run_settings(args)})


def command_line(kind: str, argv: list[str] | None) -> str:
    """The command as typed, to stamp into the parent run and the report: never with a password in it."""
    return redact(f"python -m bench.{kind} " + shlex.join(sys.argv[1:] if argv is None else argv))


def announce(study: studies.Study, budget: studies.Budget, label: str, chosen: bool, details: str) -> None:
    """What is about to run, on stderr: the study, its budget among the others, then `details`."""
    others = [b for b in study.budgets if b != budget.name]
    if budget.name == budget_estimates.GPU_BUDGET:
        estimate = budget_estimates.estimate_text(budget_estimates.packed_estimate(study, budget.name), long=True)
        as_written = " (the budget as written: overrides not counted)" if label != budget.name else ""
        details += f"\nestimate{as_written}: {escape(estimate)}"
    console.print(
        f"[bold]{escape(study.name)}[/]: {escape(study.description)}\n"
        f"budget [bold]{escape(label)}[/] ({'chosen' if chosen else 'the default'}; "
        f"others: {', '.join(others) or 'none'}): {escape(budget.description)}\n{details}"
    )
