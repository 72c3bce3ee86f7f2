"""The report as data: the Report of one or several studies at one budget and dataset, with each study's
rows per variant (bench.report.variant_rows), the published figures beside them
(bench.report.published_figures), whether the rankings hold at the partner budget, and its provenance."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from bench import provenance
from bench.errors import redact
from bench.report import compare, confirm, read
from bench.report.published_figures import published
from bench.report.variant_rows import analyse

COMPUTE_LABELS = {"epochs": "equal epochs", "flops": "equal training FLOPs"}


@dataclass
class Report:
    studies: list[str]
    budget: str
    dataset: str
    runs: pd.DataFrame  # the finished runs reported, one row each
    summary: pd.DataFrame  # one row per study x variant
    published: pd.DataFrame  # paper and peer figures beside them
    curves: pd.DataFrame  # validation accuracy and training seconds per epoch of each run
    others: pd.DataFrame  # the budgets and datasets in MLflow not reported here
    parents: dict[str, str]  # study -> MLflow parent run the report is logged to
    header: dict[str, str]  # provenance: who made this report, of what, how
    confirmation: list[str] = field(default_factory=list)  # rankings at NAME and NAME-2x (see confirm)
    # one row per comparison a study names
    comparisons: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=compare.COLUMNS))

    @property
    def name(self) -> str:
        stem = self.studies[0] if len(self.studies) == 1 else "compare-" + "-".join(self.studies)
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{stem}-{self.dataset}-{self.budget}")

    @property
    def title(self) -> str:
        text = f"{', '.join(self.studies)} [{self.budget}] on {self.dataset}"
        equal = sorted(set(self.summary["compute"].dropna()) - {"epochs"})
        if equal:  # say it in the title: such a table answers another question than equal epochs
            text += " at " + ", ".join(COMPUTE_LABELS.get(c, c) for c in equal) + " as the reference"
        return text


def build(
    tracker,
    names: list[str],
    budget: str | None,
    dataset: str | None,
    command: str,
    tracking_uri: str | None = None,
    target_pct: float | None = None,
) -> Report:
    """The report of one or several studies at one budget and dataset; `target_pct` overrides the
    studies' own validation accuracy target for time to accuracy."""
    every = [read.study_runs(tracker, name, tracking_uri) for name in names]
    chosen = budget is not None or dataset is not None
    budget, dataset = read.choose_slice(every, budget, dataset, tracking_uri)
    reported = [s.runs[(s.runs["budget"] == budget) & (s.runs["dataset"] == dataset)] for s in every]
    runs = pd.concat(reported, ignore_index=True)
    curves = read.curves(tracker, runs)
    summaries, comparisons = [], []
    for s, study_runs in zip(every, reported):
        target = target_pct if target_pct is not None else s.study.target_val_acc_pct_for(budget)
        summary, compared = analyse(
            study_runs,
            list(s.study.variants),
            s.study.reference,
            curves[curves["study"] == s.study.name],
            target,
            s.study.pairs(),
            compare.starts_from(s.study.variants),
        )
        summaries.append(summary.assign(study=s.study.name))
        comparisons.append(compared.assign(study=s.study.name))
    summary, compared = (first_study(pd.concat(frames, ignore_index=True)) for frames in (summaries, comparisons))
    confirmation = [line for s in every for line in confirmed(s, budget, dataset, compared)]
    counts = read.slice_counts(pd.concat([s.runs for s in every]))
    others = counts[(counts["budget"] != budget) | (counts["dataset"] != dataset)].reset_index(drop=True)
    parents = {
        study: group["parent_run_id"].mode().iloc[0]
        for study, group in runs.groupby("study")
        if group["parent_run_id"].notna().any()
    }
    why = "chosen with --budget/--dataset" if chosen else "the one with the most finished runs"
    which = f"{budget} on {dataset}, {len(runs)} finished runs ({why})"
    return Report(
        studies=[s.study.name for s in every],
        budget=budget,
        dataset=dataset,
        runs=runs,
        summary=summary,
        comparisons=compared,
        confirmation=confirmation,
        published=published(summary, dataset, runs),
        curves=curves,
        others=others,
        parents=parents,
        header=provenance_header(runs, command, tracker.uri, which, others),
    )


def confirmed(s, budget: str, dataset: str, compared: pd.DataFrame) -> list[str]:
    """Whether the study's rankings hold at its partner budget (NAME vs NAME-2x), where it has runs."""
    other = confirm.partner(budget)
    runs = s.runs[(s.runs["budget"] == other) & (s.runs["dataset"] == dataset)]
    if runs.empty:
        return []
    theirs = analyse(
        runs,
        list(s.study.variants),
        s.study.reference,
        pairs=s.study.pairs(),
        starts_from=compare.starts_from(s.study.variants),
    )[1]
    mine = compared[compared["study"] == s.study.name]
    base, doubled = (mine, theirs) if other.endswith(confirm.SUFFIX) else (theirs, mine)
    labels = (budget, other) if other.endswith(confirm.SUFFIX) else (other, budget)
    return [f"{s.study.name}: {line}" for line in confirm.changes(base, doubled, *labels)]


def first_study(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["study", *frame.columns.drop("study")]]


def provenance_header(runs: pd.DataFrame, command: str, uri: str, which: str, others: pd.DataFrame) -> dict[str, str]:
    here = provenance.stamp()
    also = "; ".join(f"{r.study}: {r.budget} on {r.dataset} ({r.runs} runs)" for r in others.itertuples())

    def distinct(column: str) -> str:
        return ", ".join(sorted(runs[column].dropna().astype(str).unique())) or "unknown"

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": f"{here['host']} ({here['device']}), python {here['python']}",
        "project commit": here["commit"],
        "runs trained on": distinct("device"),
        "runs torch": distinct("torch"),
        "runs commit": distinct("commit"),
        "runs host": distinct("host"),
        "budget": which,
        "other budgets in MLflow": also or "none",
        "MLflow store": redact(uri),
    }


def convergence_tags(summary: pd.DataFrame) -> dict[str, str]:
    """Tags for a study's parent run: each variant's convergence (keyed variant first: the UI cuts long keys at
    the end), and which ones had not converged."""
    tags = {f"{r.variant}.convergence": r.convergence for r in summary.itertuples() if isinstance(r.convergence, str)}
    if tags:
        failing = [r.variant for r in summary.itertuples() if r.converged == "no"]
        tags["bench.not_converged"] = ", ".join(failing) or "none"
    return tags
