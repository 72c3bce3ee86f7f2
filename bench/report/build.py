"""The report as data: one row per variant (cost, accuracy, the comparison with the reference,
convergence, time to accuracy), the published figures beside it, and its provenance."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from bench import provenance
from bench.config import EVAL_MODES
from bench.engine import evaluation
from bench.errors import redact
from bench.report import compare, confirm, read, reference, stats

SUMMARY_COLUMNS = [
    "variant",
    "model",
    "batch_norm",
    "runs",
    "seeds",
    "params",
    "flops",
    "compute",
    "epochs_trained",
    "train_gflops_per_image",
    "best_val_acc_pct",
    "best_val_acc_pct_std",
    "test_acc_pct",
    "test_acc_pct_std",
    "top1_err_pct",
    "train_seconds",
    "images_per_s",
    "reference",
    "analysis",
    "diff_pts",
    "ci_low_pts",
    "ci_high_pts",
    "p_value",
    "p_holm",
    "hedges_g",
    "seeds_for_power",
    "verdict",
    "converged",
    "convergence_slope",
    "convergence_ci_low",
    "convergence_ci_high",
    "convergence",
    "target_val_acc_pct",
    "reached_target",
    "epochs_to_target",
    "seconds_to_target",
    "paper_config",
    "paper_top1_err_pct",
    "paper_top5_err_pct",
]
FLOAT_COLUMNS = (
    "diff_pts",
    "ci_low_pts",
    "ci_high_pts",
    "p_value",
    "p_holm",
    "hedges_g",
    "seeds_for_power",
    "convergence_slope",
    "convergence_ci_low",
    "convergence_ci_high",
    "target_val_acc_pct",
    "epochs_to_target",
    "seconds_to_target",
    "train_gflops_per_image",
)
COMPUTE_LABELS = {"epochs": "equal epochs", "flops": "equal training FLOPs"}


def summarize(
    frame: pd.DataFrame,
    order: list[str] | None = None,
    reference_name: str | None = None,
    curves: pd.DataFrame | None = None,
    target_pct: float | None = None,
    pairs: list[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """One row per variant of one study (see analyse)."""
    return analyse(frame, order, reference_name, curves, target_pct, pairs)[0]


def analyse(
    frame: pd.DataFrame,
    order: list[str] | None = None,
    reference_name: str | None = None,
    curves: pd.DataFrame | None = None,
    target_pct: float | None = None,
    pairs: list[tuple[str, str]] | None = None,
    starts_from: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per variant of one study: seeds, cost, accuracy mean and std (percent), its comparison
    (Holm-adjusted over the study's `pairs`, by default each variant against the reference),
    convergence and time to `target_pct`; and one row per comparison."""
    grouped = {name: runs for name, runs in frame.groupby("variant", sort=False)}
    names = [v for v in (order or []) if v in grouped] + [v for v in grouped if v not in (order or [])]
    if pairs is None:
        pairs = [(n, reference_name) for n in names if reference_name is not None and n != reference_name]
    results = compare.tested(grouped, pairs)
    smallest = min((abs(c.diff) for c in results.values()), default=None)
    convergence = (
        {n: stats.convergence(curves[curves["variant"] == n], smallest) for n in names} if curves is not None else {}
    )
    verdicts = {
        (a, b): (
            stats.verdict(a, b, results[(a, b)]) + convergence_note(a, b, convergence)
            if (a, b) in results
            else compare.missing(a, b, grouped)
        )
        for a, b in pairs
    }
    compute = compare.train_compute(grouped, starts_from or {})
    comparisons = compare.frame(pairs, results, verdicts, compute, set(starts_from or {}))
    rows = []
    for name in names:
        runs = grouped[name]
        test, val = runs["test_acc"].astype(float) * 100, runs["best_val_acc"].astype(float) * 100
        model, batch_norm = runs["model"].iloc[0], bool(runs["batch_norm"].iloc[0])
        mine = [(a, b) for a, b in pairs if a == name]
        row = {
            "variant": name,
            "model": model,
            "batch_norm": batch_norm,
            "runs": len(runs),
            "seeds": ",".join(sorted(map(str, runs["seed"]), key=lambda s: (len(s), s))),
            "params": float(runs["params"].iloc[0]),
            "flops": float(runs["flops"].iloc[0]),
            "compute": runs["compute"].iloc[0] if "compute" in runs else "epochs",
            "epochs_trained": float((runs["epochs"] * runs["compute_scale"]).mean()) if "epochs" in runs else np.nan,
            "train_gflops_per_image": compute[name] / 1e9,
            "best_val_acc_pct": val.mean(),
            "best_val_acc_pct_std": val.std(ddof=1),
            "test_acc_pct": test.mean(),
            "test_acc_pct_std": test.std(ddof=1),
            "top1_err_pct": 100 - test.mean(),
            "train_seconds": runs["train_seconds"].astype(float).mean(),
            "images_per_s": runs["images_per_s"].astype(float).mean(),
            "reference": " / ".join(b for _, b in mine) or reference_name,
            "verdict": " / ".join(verdicts[p] for p in mine),
        }
        if name == reference_name and not mine:
            row["verdict"] = "reference"
        # its one comparison's numbers (several: the comparisons table has them)
        if len(mine) == 1 and mine[0] in results:
            row.update(compare.numbers(results[mine[0]]))
        if name in convergence:
            k = convergence[name]
            row.update(
                converged=k.label,
                convergence_slope=k.slope,
                convergence_ci_low=k.low,
                convergence_ci_high=k.high,
                convergence=k.text,
            )
        if target_pct is not None and curves is not None:
            t = stats.time_to_accuracy(curves[curves["variant"] == name], target_pct)
            row.update(
                target_val_acc_pct=target_pct,
                reached_target=t.reached_text,
                epochs_to_target=t.epochs,
                seconds_to_target=t.seconds,
            )
        scales = scale_protocol(runs)
        paper = (
            reference.paper_row(model, batch_norm, scales.train_scale, scales.test_scales)
            if scales
            else reference.paper_row(model, batch_norm, "256", "256")
        )
        row["paper_config"], row["paper_top1_err_pct"], row["paper_top5_err_pct"] = (
            (paper.config, paper.top1, paper.top5) if paper else (None, np.nan, np.nan)
        )
        rows.append(row)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype({c: float for c in FLOAT_COLUMNS})
    return summary, comparisons


def convergence_note(name: str, reference_name: str, convergence: dict[str, stats.Convergence]) -> str:
    """What a verdict must add when either side of the comparison had not, or not surely, stopped
    improving."""
    for side, prefix in ((name, ""), (reference_name, f"the reference {reference_name} is ")):
        judged = convergence.get(side)
        if judged is not None and judged.converged is False:
            return f"; {prefix}{stats.NOT_CONVERGED}"
    for side, prefix in ((name, ""), (reference_name, f"the reference {reference_name}: ")):
        judged = convergence.get(side)
        if judged is not None and judged.converged is None and judged.slope is not None:
            return f"; {prefix}{stats.UNCERTAIN}"
    return ""


@dataclass(frozen=True)
class ScaleProtocol:
    """How a variant's runs were tested under the paper's scale protocol, read off their metrics."""

    train_scale: str  # S as RunConfig spells it, at the paper's 224 crop
    test_scales: str  # the Q the runs were tested at, ascending, comma-separated
    modes: tuple[str, ...]

    @property
    def q_key(self) -> int | None:
        """The Q of the metric that sums the runs up: the one test scale, or None for the multi-scale average."""
        return None if "," in self.test_scales else int(self.test_scales)


def scale_protocol(runs: pd.DataFrame) -> ScaleProtocol | None:
    """None for runs without the paper's scale protocol (no train_scale)."""
    if "train_scale" not in runs or runs["train_scale"].isna().all():
        return None
    found = [evaluation.parse_metric(c) for c in runs.columns if runs[c].notna().any()]
    found = [f for f in found if f is not None]
    if not found:
        return None
    qs = sorted({q for _, _, q in found if q is not None})
    modes = {mode for _, mode, _ in found}
    return ScaleProtocol(
        runs["train_scale"].iloc[0], ",".join(map(str, qs)), tuple(m for m in EVAL_MODES if m in modes)
    )


def variant_runs(runs: pd.DataFrame, row) -> pd.DataFrame:
    """The runs of one summary row (its study's, where the summary has several)."""
    mine = runs["variant"] == row.variant
    if "study" in runs and hasattr(row, "study"):
        mine &= runs["study"] == row.study
    return runs[mine]


def paper_protocol_rows(model: str, batch_norm: bool, runs: pd.DataFrame, scales: ScaleProtocol) -> list[dict]:
    """Per evaluation mode: our top-1 / top-5 error (means over seeds) beside the paper's row at the same S
    and Q, in the same mode where the paper has it (else its dense row, and the label says so)."""
    rows = []
    for mode in scales.modes:
        errors = [100 - 100 * runs[evaluation.metric_name(k, mode, scales.q_key)].astype(float).mean() for k in (1, 5)]
        paper = reference.paper_row(model, batch_norm, scales.train_scale, scales.test_scales, mode)
        row = {
            "metric": f"top-1 / top-5 err % ({mode}, S={scales.train_scale}, Q={scales.test_scales})",
            "ours": f"{errors[0]:.2f} / {errors[1]:.2f}",
        }
        if paper is None:
            why = "the paper had no BatchNorm" if batch_norm else "the paper has no row at this S and Q"
            rows.append({**row, "theirs": f"none ({why})", "source": reference.PAPER_SOURCE, "label": ""})
            continue
        label = reference.PAPER_LABEL + ("" if paper.mode == mode else f"; the paper's mode: {paper.mode}")
        rows.append(
            {
                **row,
                "theirs": f"{paper.top1:.1f} / {paper.top5:.1f}",
                "source": reference.paper_source(paper),
                "label": label,
            }
        )
    return rows


def published(summary: pd.DataFrame, dataset: str, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's Tables 3-5 and the peers' figures for the variants in the summary, each labelled;
    runs under the paper's scale protocol (in `runs`) get the paper's row at their S, Q and modes."""
    several = "study" in summary and summary["study"].nunique() > 1
    rows = []
    for r in summary.itertuples():
        first = {"study": r.study, "variant": r.variant} if several else {"variant": r.variant}
        mine = None if runs is None else variant_runs(runs, r)
        scales = None if mine is None or not reference.paper_config(r.model) else scale_protocol(mine)
        if scales is not None:
            rows += [{**first, **row} for row in paper_protocol_rows(r.model, r.batch_norm, mine, scales)]
        elif isinstance(r.paper_config, str):  # under pandas 3 a missing config is NaN, which is truthy
            rows.append(
                {
                    **first,
                    "metric": "top-1 err %",
                    "ours": f"{r.top1_err_pct:.2f}",
                    "theirs": f"{r.paper_top1_err_pct:.1f} (top-5 {r.paper_top5_err_pct:.1f})",
                    "source": f"{reference.PAPER_SOURCE}, config {r.paper_config}",
                    "label": reference.PAPER_LABEL,
                }
            )
        elif reference.paper_config(r.model):
            rows.append(
                {
                    **first,
                    "metric": "top-1 err %",
                    "ours": f"{r.top1_err_pct:.2f}",
                    "theirs": "none (the paper had no BatchNorm)",
                    "source": reference.PAPER_SOURCE,
                    "label": "",
                }
            )
        for figure in reference.peer_figures(r.model, r.batch_norm, dataset):
            rows.append(
                {
                    **first,
                    "metric": "test acc %",
                    "ours": f"{r.test_acc_pct:.2f}",
                    "theirs": f"{figure.test_acc_pct:.2f}",
                    "source": figure.source,
                    "label": figure.label,
                }
            )
    return pd.DataFrame(rows)


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
