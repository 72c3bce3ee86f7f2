"""python -m bench.report --study depth: a study's runs from MLflow, side by side with each other,
the paper and the peers, as a terminal table and as reports/<study>-<dataset>-<budget>.md|.csv|.png.

One budget and dataset at a time (runs of different sizes never mix): by default the one with the
most finished runs. Each variant is compared with the study's reference variant on test accuracy
over seeds (paired where the seeds match, Welch otherwise; Holm over the study's comparisons), each
variant's convergence is judged, and time to a validation accuracy target is given; `--compare depth
bn` puts several studies' variants in one table.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from rich.markup import escape

from bench import out_folder
from bench.errors import BenchError, Parser, redact
from bench.progress import console, out
from bench.report import build, read, render, terminal
from bench.report.publish import DEFAULT_OUT, publish
from bench.run import studies


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m bench.report",
        description="A study's runs from MLflow as a table, beside the paper and the peers, with plots.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--study", help="a study name (studies/NAME.toml) or the path of a study TOML file")
    which.add_argument("--compare", nargs="+", metavar="STUDY", help="several studies' variants in one table")
    p.add_argument("--budget", help="the budget label to report (default: the one with the most finished runs)")
    p.add_argument("--dataset", help="the dataset to report (default: the one with the most finished runs)")
    p.add_argument(
        "--target-val-acc",
        metavar="PCT",
        help="validation accuracy (%%) for time to accuracy (default: the study's target_val_acc_pct)",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--format", choices=("md", "csv", "json"), help="print the report in this format to stdout")
    p.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"folder for the .md, .csv and .png (default: {DEFAULT_OUT}/; "
        "the reference reports in results/ change only when you name it)",
    )
    return p


def show(table: tuple[list[str], list[list[str]]], title: str) -> None:
    """A table at the terminal's width (100 columns when piped): the columns that fit, whole."""
    columns = terminal.width()
    shown, left = terminal.table(*table, title=title, columns=columns)
    out.print(shown, width=columns)
    if left:
        console.print(f"  (not shown at {columns} columns, in the .md and .csv: {escape(', '.join(left))})")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    names = [args.study] if args.study else args.compare
    if not names:
        raise BenchError(
            "say what to report: --study NAME or --compare STUDY STUDY... "
            "(python -m bench.ablation --list shows the studies)"
        )
    if len(set(names)) != len(names):
        raise BenchError(f"--compare names a study twice: {' '.join(names)}")
    target = studies.percent(args.target_val_acc, "--target-val-acc")
    out_folder.check(args.out, "--out")
    # Stamped into the md, csv and png and logged to MLflow: never with a password in it.
    command = redact("python -m bench.report " + shlex.join(sys.argv[1:] if argv is None else argv))
    tracker = read.open_store(args.tracking_uri)
    report = build.build(tracker, names, args.budget, args.dataset, command, args.tracking_uri, target)
    paths = publish(tracker, report, Path(args.out))

    if args.format:
        print({"md": render.markdown, "csv": render.csv_text, "json": render.json_text}[args.format](report))
        return 0
    others = report.header["other budgets in MLflow"]
    console.print(f"reporting budget {escape(report.header['budget'])}; also in MLflow: {escape(others)}")
    show(render.display_rows(report.summary), escape(report.title))
    comparisons = render.comparison_rows(report.comparisons)
    if comparisons[1]:
        against_reference = set(report.comparisons["reference"]) <= set(
            report.summary.loc[report.summary["verdict"].eq("reference"), "variant"]
        )
        show(
            comparisons,
            "each variant against the reference" if against_reference else "the comparisons the study names",
        )
    for line in render.verdict_lines(report.summary, report.comparisons):
        out.print(f"  {escape(line)}", width=terminal.width())
    if not report.published.empty:
        show(
            (list(report.published.columns), report.published.astype(str).values.tolist()),
            "published figures (different data or recipe, as labelled)",
        )
    console.print(f"wrote {', '.join(map(str, paths))}")
    return 0
