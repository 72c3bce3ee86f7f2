"""python -m bench.report --study depth: a study's runs from MLflow, side by side with each other,
the paper and the peers, as a terminal table and as results/<study>-<dataset>-<budget>.md|.csv|.png.

One budget and dataset at a time (runs of different sizes never mix): by default the one with the
most finished runs. Each variant is compared with the study's reference variant by Welch's t-test
on test accuracy over seeds; `--compare depth bn` puts several studies' variants in one table.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import textwrap
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import track  # noqa: E402
from rich.table import Table  # noqa: E402
from scipy import stats  # noqa: E402

from bench import provenance, reference, studies  # noqa: E402
from bench.errors import BenchError, cli, redact  # noqa: E402
from bench.progress import console, out  # noqa: E402  (notes on stderr, tables on stdout)

COLUMNS = {
    "params": "metrics.params",
    "flops": "metrics.flops",
    "best_val_acc": "metrics.best_val_acc",
    "test_acc": "metrics.test_acc",
    "train_seconds": "metrics.train_seconds",
    "images_per_s": "metrics.images_per_s",  # the last epoch's: past start-up costs
}
TAGS = {
    "variant": "tags.bench.variant",
    "seed": "tags.bench.seed",
    "config_hash": "tags.bench.config_hash",
    "budget": "tags.bench.budget",
    "dataset": "tags.bench.dataset",
    "model": "tags.bench.model",
    "device": "tags.bench.device",
    "torch": "tags.bench.torch",
    "commit": "tags.bench.commit",
    "host": "tags.bench.host",
    "parent_run_id": "tags.mlflow.parentRunId",
}
RUN_COLUMNS = ["run_id", *TAGS, "batch_norm", *COLUMNS]
CONFIDENCE = 0.95
SUMMARY_COLUMNS = [
    "variant", "model", "batch_norm", "runs", "seeds", "params", "flops", "best_val_acc_pct", "best_val_acc_pct_std",
    "test_acc_pct", "test_acc_pct_std", "top1_err_pct", "train_seconds", "images_per_s", "reference", "diff_pts",
    "ci_low_pts", "ci_high_pts", "p_value", "verdict", "paper_config", "paper_top1_err_pct", "paper_top5_err_pct",
]
TEXT_COLUMNS = ("study", "variant", "metric", "theirs", "source", "label")
ALPHA = 1 - CONFIDENCE
DEFAULT_OUT = "reports"  # git-ignored; results/ holds the committed reference reports


# --- reading MLflow -------------------------------------------------------------------------------


def runs_frame(tracker, experiment_id: str, budget: str | None = None, hashes: set[str] | None = None) -> pd.DataFrame:
    """One row per FINISHED child run: variant, seed, config hash, budget, dataset, final metrics."""
    runs = tracker.finished_runs([experiment_id], f"tags.`bench.budget` = '{budget}'" if budget is not None else "")
    if runs.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    frame = pd.DataFrame({
        "run_id": runs["run_id"],
        **{name: runs.get(column) for name, column in TAGS.items()},
        "batch_norm": runs.get("params.batch_norm", pd.Series("False", index=runs.index)).eq("True"),
        **{name: runs.get(column) for name, column in COLUMNS.items()},
    })[RUN_COLUMNS]
    if hashes is not None:
        frame = frame[frame["config_hash"].isin(hashes)]
    # Newest first (search_runs' order): a config trained twice counts once.
    return frame.drop_duplicates("config_hash").reset_index(drop=True)


def open_store(uri: str | None):
    """The Tracker for an existing store; a store that is not there is an error, never created empty."""
    from bench.tracking import open_existing

    return open_existing(uri)


@dataclass(frozen=True)
class StudyRuns:
    given: str  # as the person named it (a name or a TOML path), for the commands we suggest
    study: studies.Study
    runs: pd.DataFrame  # every finished variant run of the study, at every budget and dataset


def study_runs(tracker, name: str, tracking_uri: str | None) -> StudyRuns:
    study = studies.load(name)
    if not study.variants:
        raise BenchError(f"study {study.name!r} has no variants to report (it is a search): "
                         f"python -m bench.search --study {study.name}")
    experiment_id = tracker.find_experiment(study.name)
    runs = runs_frame(tracker, experiment_id) if experiment_id is not None else pd.DataFrame(columns=RUN_COLUMNS)
    runs = runs[runs["variant"].notna()]  # search trials in the same experiment have no variant
    if runs.empty:
        raise BenchError(f"study {study.name!r} has no finished runs in {redact(tracker.uri)}; run it with: "
                         f"{run_command(name, None, tracking_uri)}")
    return StudyRuns(name, study, runs.assign(study=study.name))


def run_command(study: str, budget: str | None, tracking_uri: str | None, dataset: str | None = None) -> str:
    command = f"python -m bench.ablation --study {study}"
    if budget is not None and "+" not in budget:  # a label with overrides is not a --budget value
        command += f" --budget {budget}"
    if dataset is not None:
        command += f" --dataset {dataset}"
    if tracking_uri:
        command += f" --tracking-uri {redact(tracking_uri)}"
    return command


def slice_counts(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished runs per study, budget label and dataset."""
    return runs.groupby(["study", "budget", "dataset"]).size().rename("runs").reset_index()


def choose_slice(every: list[StudyRuns], budget: str | None, dataset: str | None,
                 tracking_uri: str | None) -> tuple[str, str]:
    """The budget and dataset to report: the one every study has, with the most finished runs."""
    counts = slice_counts(pd.concat([s.runs for s in every]))
    shared = counts.groupby(["budget", "dataset"]).agg(studies=("study", "nunique"), runs=("runs", "sum"))
    shared = shared[shared["studies"] == len(every)].reset_index()
    if budget is not None:
        shared = shared[shared["budget"] == budget]
    if dataset is not None:
        shared = shared[shared["dataset"] == dataset]
    if shared.empty:
        if len(every) == 1:
            name = every[0].given
            held = "; ".join(f"{r.budget} on {r.dataset} ({r.runs} runs)" for r in counts.itertuples())
            wanted = " ".join(x for x in (budget and f"at budget {budget}", dataset and f"on {dataset}") if x)
            raise BenchError(f"study {every[0].study.name!r} has no finished runs {wanted} (it has {held}); "
                             f"run it with: {run_command(name, budget, tracking_uri, dataset)}")
        held = "; ".join(f"{r.study}: {r.budget} on {r.dataset} ({r.runs} runs)" for r in counts.itertuples())
        raise BenchError(f"the studies share no budget and dataset with finished runs ({held}); "
                         "run them at one budget, or pick one with --budget/--dataset")
    best = shared.sort_values("runs", ascending=False, kind="stable").iloc[0]
    return best["budget"], best["dataset"]


def val_curves(tracker, runs: pd.DataFrame) -> pd.DataFrame:
    """Validation accuracy per epoch of each run (step = epoch)."""
    rows = []
    for run in track(list(runs.itertuples()), description="reading curves", console=console, transient=True):
        for step, value in tracker.metric_history(run.run_id, "val_acc"):
            rows.append((run.study, run.variant, run.seed, step, value))
    return pd.DataFrame(rows, columns=["study", "variant", "seed", "epoch", "val_acc"])


# --- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A variant's test accuracy minus the reference's, in percentage points."""

    diff: float
    low: float | None
    high: float | None
    p: float | None
    n: int
    n_ref: int
    why_no_interval: str | None = None


def compare(values, reference_values, confidence: float = CONFIDENCE) -> Comparison:
    """Welch's t-test (unequal variances) on two samples, with the CI of the mean difference.

    Welch's interval is exact for normal seeds at any n >= 2 and widens honestly as n falls; a
    bootstrap at n = 2 would resample two numbers and give an interval far too narrow to trust.
    """
    a, b = np.asarray(values, dtype=float), np.asarray(reference_values, dtype=float)
    diff = a.mean() - b.mean()
    if min(len(a), len(b)) < 2:
        side = "one seed" + (" of each" if max(len(a), len(b)) < 2 else "")
        return Comparison(diff, None, None, None, len(a), len(b), side)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Comparison(diff, None, None, None, len(a), len(b), "every seed gave the same accuracy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nearly equal seeds: scipy's precision note
        result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence)
    return Comparison(diff, float(interval.low), float(interval.high), float(result.pvalue), len(a), len(b))


def verdict(name: str, reference_name: str, c: Comparison) -> str:
    """One plain sentence: better, worse, or no significant difference, with the numbers."""
    n = f"n={c.n}" if c.n == c.n_ref else f"n={c.n} vs {c.n_ref}"
    if c.p is None:
        return f"{name} vs {reference_name}: {c.diff:+.2f} points; no interval can be given ({c.why_no_interval}, {n})"
    detail = f"{CONFIDENCE:.0%} CI {c.low:.2f} to {c.high:.2f}, p={format_p(c.p)}"
    if c.p < ALPHA:
        word = "better" if c.diff > 0 else "worse"
        return f"{name} {word} than {reference_name} by {abs(c.diff):.2f} points ({detail}, {n})"
    return f"{name} vs {reference_name}: no significant difference at {n} ({c.diff:+.2f} points, {detail})"


def format_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# --- one row per variant --------------------------------------------------------------------------


def summarize(frame: pd.DataFrame, order: list[str] | None = None, reference_name: str | None = None) -> pd.DataFrame:
    """One row per variant: seeds, cost, accuracy mean and std (percent), and the reference comparison."""
    grouped = {name: runs for name, runs in frame.groupby("variant", sort=False)}
    names = [v for v in (order or []) if v in grouped] + [v for v in grouped if v not in (order or [])]
    ref_runs = grouped.get(reference_name)
    rows = []
    for name in names:
        runs = grouped[name]
        test, val = runs["test_acc"].astype(float) * 100, runs["best_val_acc"].astype(float) * 100
        model, batch_norm = runs["model"].iloc[0], bool(runs["batch_norm"].iloc[0])
        row = {
            "variant": name,
            "model": model,
            "batch_norm": batch_norm,
            "runs": len(runs),
            "seeds": ",".join(sorted(map(str, runs["seed"]), key=lambda s: (len(s), s))),
            "params": float(runs["params"].iloc[0]),
            "flops": float(runs["flops"].iloc[0]),
            "best_val_acc_pct": val.mean(),
            "best_val_acc_pct_std": val.std(ddof=1),
            "test_acc_pct": test.mean(),
            "test_acc_pct_std": test.std(ddof=1),
            "top1_err_pct": 100 - test.mean(),
            "train_seconds": runs["train_seconds"].astype(float).mean(),
            "images_per_s": runs["images_per_s"].astype(float).mean(),
            "reference": reference_name,
            "diff_pts": np.nan, "ci_low_pts": np.nan, "ci_high_pts": np.nan, "p_value": np.nan,
            "verdict": "",
        }
        if name == reference_name:
            row["verdict"] = "reference"
        elif reference_name is not None and ref_runs is None:
            row["verdict"] = f"no finished runs of the reference {reference_name} to compare with"
        elif ref_runs is not None:
            c = compare(test, ref_runs["test_acc"].astype(float) * 100)
            row.update(diff_pts=c.diff, ci_low_pts=c.low, ci_high_pts=c.high, p_value=c.p,
                       verdict=verdict(name, reference_name, c))
        paper = reference.paper_errors(model, batch_norm) or (None, np.nan, np.nan)
        row["paper_config"], row["paper_top1_err_pct"], row["paper_top5_err_pct"] = paper
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype({"ci_low_pts": float, "ci_high_pts": float, "p_value": float})


def display_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The summary as text cells, shared by the terminal table and the markdown file."""
    several = "study" in summary and summary["study"].nunique() > 1
    compared = summary["verdict"].ne("").any()
    headers = (["study"] if several else []) + ["variant", "runs", "params", "MFLOPs", "best val %", "test %",
                                     "top-1 err %", "train s", "img/s"]
    if compared:
        headers += ["Δ test pts (95% CI)", "p"]
    rows = []
    for r in summary.itertuples():
        cells = ([r.study] if several else []) + [
            r.variant, str(r.runs), f"{r.params:,.0f}", f"{r.flops / 1e6:,.1f}",
            mean_std(r.best_val_acc_pct, r.best_val_acc_pct_std), mean_std(r.test_acc_pct, r.test_acc_pct_std),
            f"{r.top1_err_pct:.2f}", f"{r.train_seconds:.0f}",
            "" if pd.isna(r.images_per_s) else f"{r.images_per_s:,.0f}",
        ]
        if compared:
            cells += [difference(r), "" if pd.isna(r.p_value) else format_p(r.p_value)]
        rows.append(cells)
    return headers, rows


def variant_table(frame: pd.DataFrame, title: str, order: list[str] | None = None,
                  reference_name: str | None = None) -> Table:
    return rich_table(*display_rows(summarize(frame, order, reference_name)), title=title)


def rich_table(headers: list[str], rows: list[list[str]], title: str) -> Table:
    table = Table(title=title)
    for column in headers:
        table.add_column(escape(column), justify="left" if column in TEXT_COLUMNS else "right")
    for row in rows:
        table.add_row(*map(escape, row))
    return table


def mean_std(mean: float, std: float) -> str:
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def difference(row) -> str:
    if row.verdict == "reference":
        return "reference"
    if pd.isna(row.diff_pts):
        return ""
    if pd.isna(row.ci_low_pts):
        return f"{row.diff_pts:+.2f} (no interval)"
    return f"{row.diff_pts:+.2f} ({row.ci_low_pts:.2f} to {row.ci_high_pts:.2f})"


# --- published figures ------------------------------------------------------------------------------


def published(summary: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The paper's Table 3 and the peers' figures for the variants in the summary, each labelled."""
    several = "study" in summary and summary["study"].nunique() > 1
    rows = []
    for r in summary.itertuples():
        first = {"study": r.study, "variant": r.variant} if several else {"variant": r.variant}
        if r.paper_config:
            rows.append({**first, "metric": "top-1 err %", "ours": f"{r.top1_err_pct:.2f}",
                         "theirs": f"{r.paper_top1_err_pct:.1f} (top-5 {r.paper_top5_err_pct:.1f})",
                         "source": f"{reference.PAPER_SOURCE}, config {r.paper_config}", "label": reference.PAPER_LABEL})
        elif reference.paper_config(r.model):
            rows.append({**first, "metric": "top-1 err %", "ours": f"{r.top1_err_pct:.2f}",
                         "theirs": "none (the paper had no BatchNorm)", "source": reference.PAPER_SOURCE, "label": ""})
        for figure in reference.peer_figures(r.model, r.batch_norm, dataset):
            rows.append({**first, "metric": "test acc %", "ours": f"{r.test_acc_pct:.2f}",
                         "theirs": f"{figure.test_acc_pct:.2f}", "source": figure.source, "label": figure.label})
    return pd.DataFrame(rows)


# --- the report ---------------------------------------------------------------------------------


@dataclass
class Report:
    studies: list[str]
    budget: str
    dataset: str
    runs: pd.DataFrame       # the finished runs reported, one row each
    summary: pd.DataFrame    # one row per study x variant
    published: pd.DataFrame  # paper and peer figures beside them
    curves: pd.DataFrame     # validation accuracy per epoch of each run
    others: pd.DataFrame     # the budgets and datasets in MLflow not reported here
    parents: dict[str, str]  # study -> MLflow parent run the report is logged to
    header: dict[str, str]   # provenance: who made this report, of what, how

    @property
    def name(self) -> str:
        stem = self.studies[0] if len(self.studies) == 1 else "compare-" + "-".join(self.studies)
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{stem}-{self.dataset}-{self.budget}")


def build(tracker, names: list[str], budget: str | None, dataset: str | None, command: str,
          tracking_uri: str | None = None) -> Report:
    every = [study_runs(tracker, name, tracking_uri) for name in names]
    chosen = budget is not None or dataset is not None
    budget, dataset = choose_slice(every, budget, dataset, tracking_uri)
    summaries, reported = [], []
    for s in every:
        runs = s.runs[(s.runs["budget"] == budget) & (s.runs["dataset"] == dataset)]
        reported.append(runs)
        summaries.append(summarize(runs, list(s.study.variants), s.study.reference).assign(study=s.study.name))
    runs = pd.concat(reported, ignore_index=True)
    summary = pd.concat(summaries, ignore_index=True)
    summary = summary[["study", *summary.columns.drop("study")]]
    counts = slice_counts(pd.concat([s.runs for s in every]))
    others = counts[(counts["budget"] != budget) | (counts["dataset"] != dataset)].reset_index(drop=True)
    parents = {study: group["parent_run_id"].mode().iloc[0]
               for study, group in runs.groupby("study") if group["parent_run_id"].notna().any()}
    why = "chosen with --budget/--dataset" if chosen else "the one with the most finished runs"
    which = f"{budget} on {dataset}, {len(runs)} finished runs ({why})"
    return Report(
        studies=[s.study.name for s in every], budget=budget, dataset=dataset, runs=runs, summary=summary,
        published=published(summary, dataset), curves=val_curves(tracker, runs), others=others, parents=parents,
        header=provenance_header(runs, command, tracker.uri, which, others),
    )


def provenance_header(runs: pd.DataFrame, command: str, uri: str, which: str, others: pd.DataFrame) -> dict[str, str]:
    here = provenance.stamp()
    also = "; ".join(f"{r.study}: {r.budget} on {r.dataset} ({r.runs} runs)" for r in others.itertuples())

    def distinct(column: str) -> str:
        return ", ".join(sorted(runs[column].dropna().astype(str).unique())) or "unknown"

    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
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


# --- output ---------------------------------------------------------------------------------------


def title(report: Report) -> str:
    return f"{', '.join(report.studies)} [{report.budget}] on {report.dataset}"


def markdown(report: Report) -> str:
    headers, rows = display_rows(report.summary)
    lines = [f"# {title(report)}", ""]
    lines += [f"- {key}: {_md(value)}" for key, value in report.header.items()]
    lines += ["", markdown_table(headers, rows), ""]
    verdicts = [v for v in report.summary["verdict"] if v and v != "reference"]
    if verdicts:
        lines += ["Each variant against its study's reference (test accuracy, Welch's t-test over seeds; "
                  f"{CONFIDENCE:.0%} CI; not corrected for multiple comparisons):", ""]
        lines += [f"- {_md(v)}" for v in verdicts] + [""]
    else:
        lines += ["No comparisons: the study names no reference variant, or it alone has runs.", ""]
    if not report.published.empty:
        lines += ["Published figures beside ours (different data or recipe, as labelled; not like for like):", ""]
        lines += [markdown_table(list(report.published.columns), report.published.astype(str).values.tolist()), ""]
    lines += [f"![validation accuracy per epoch; test accuracy against params and FLOPs]({report.name}.png)", ""]
    lines += ["Accuracies are means over seeds ± their standard deviation (n-1); top-1 error is 100 minus the mean "
              "test accuracy; train s and img/s (last epoch) are means over seeds; MFLOPs are forward FLOPs for "
              "one image.", ""]
    return "\n".join(lines)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(_md(c) for c in cells) + " |"

    return "\n".join([line(headers), "|" + "|".join("---" for _ in headers) + "|", *map(line, rows)])


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def csv_text(report: Report) -> str:
    header = "".join(f"# {key}: {value}\n" for key, value in report.header.items())
    return header + wide_summary(report).to_csv(index=False)


def wide_summary(report: Report) -> pd.DataFrame:
    """The summary with one column per peer source (their published test accuracy, %)."""
    wide = report.summary.copy()
    for figure in reference.PEERS:
        if figure.dataset != report.dataset:
            continue
        column = f"peer_acc_pct {figure.source}"
        match = (wide["model"] == figure.model) & (
            figure.batch_norm is None or wide["batch_norm"] == figure.batch_norm)
        wide.loc[match, column] = figure.test_acc_pct
    return wide


def json_text(report: Report) -> str:
    return json.dumps({
        "studies": report.studies,
        "budget": report.budget,
        "dataset": report.dataset,
        "provenance": report.header,
        "other_budgets": json.loads(report.others.to_json(orient="records", double_precision=15)),
        "variants": json.loads(report.summary.to_json(orient="records", double_precision=15)),
        "published": json.loads(report.published.to_json(orient="records", double_precision=15)),
    }, indent=2)


def figure(report: Report, path: Path) -> Path:
    """Validation accuracy per epoch (mean, min-max band over seeds); test accuracy vs params and FLOPs."""
    fig, (curve_ax, params_ax, flops_ax) = plt.subplots(1, 3, figsize=(16, 5.4))
    summary = report.summary
    labels = [f"{r.study}/{r.variant}" if len(report.studies) > 1 else r.variant for r in summary.itertuples()]
    colors = [plt.colormaps["tab10"](i % 10) for i in range(len(summary))]
    for r, label, color in zip(summary.itertuples(), labels, colors):
        curves = report.curves[(report.curves["study"] == r.study) & (report.curves["variant"] == r.variant)]
        by_epoch = curves.groupby("epoch")["val_acc"].agg(["mean", "min", "max"]) * 100
        curve_ax.plot(by_epoch.index, by_epoch["mean"], "o-", color=color, label=f"{label} (n={r.runs})")
        curve_ax.fill_between(by_epoch.index, by_epoch["min"], by_epoch["max"], color=color, alpha=0.18)
    curve_ax.set(xlabel="epoch", ylabel="validation accuracy %",
                 title="validation accuracy (mean over seeds, band: min to max)")
    curve_ax.xaxis.get_major_locator().set_params(integer=True)
    curve_ax.legend(fontsize=9)
    for ax, column, name in ((params_ax, "params", "parameters"), (flops_ax, "flops", "forward FLOPs per image")):
        cost_scatter(ax, summary[column].to_numpy(), summary, labels, colors)
        ax.set(xlabel=f"{name} (log scale)", ylabel="test accuracy % (mean ± std over seeds)",
               title=f"test accuracy against {name}")
    for ax in (curve_ax, params_ax, flops_ax):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title(report), fontsize=13)
    h = report.header
    footer = "\n".join(textwrap.wrap(
        f"{h['date']} · {h['command']} · report machine {h['machine']}, commit {h['project commit']} · "
        f"runs trained on {h['runs trained on']}, torch {h['runs torch']}, commit {h['runs commit']}", 210))
    fig.text(0.01, 0.01, footer, fontsize=7.5, color="dimgrey", va="bottom")
    fig.tight_layout(rect=(0, 0.02 + 0.025 * (footer.count("\n") + 1), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Description": footer, "Source": h["command"]})
    plt.close(fig)
    return path


def cost_scatter(ax, costs: np.ndarray, summary: pd.DataFrame, labels: list[str], colors: list) -> None:
    """Test accuracy (mean ± std) against a cost on a log axis, with the cost/accuracy front."""
    accuracy = summary["test_acc_pct"].to_numpy()
    for cost, acc, std, color in zip(costs, accuracy, summary["test_acc_pct_std"].fillna(0), colors):
        ax.errorbar(cost, acc, yerr=std, fmt="o", color=color, capsize=4, markersize=7)
    front = pareto_front(costs, accuracy)
    ax.plot(costs[front], accuracy[front], "--", color="grey", alpha=0.7,
            label="front: more accurate than every cheaper variant")
    ax.legend(fontsize=9, loc="lower right")
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.12)
    if costs.max() < 10 * costs.min():  # under a decade a log axis has no labelled ticks of its own
        ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=5, min_n_ticks=3))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    place_labels(ax, costs, accuracy, labels)


def place_labels(ax, xs: np.ndarray, ys: np.ndarray, labels: list[str]) -> None:
    """Name each point, moving a name up or down until it clears the names already placed nearby
    (variants of equal cost, like A and A-LRN, would otherwise print over each other)."""
    to_axes = ax.transData + ax.transAxes.inverted()
    point = ax.figure.dpi / 72 / ax.bbox.height  # one typographic point, in axes fractions
    placed: list[tuple[float, float]] = []
    for i in np.lexsort((ys, xs)):
        x, y = to_axes.transform((xs[i], ys[i]))
        for dy in (5, -13, 17, -25, 29, -37, 41):
            if all(abs(y + dy * point - py) > 13 * point or abs(x - px) > 0.25 for px, py in placed):
                break
        placed.append((x, y + dy * point))
        right_half = x > 0.6  # name to the left there, so it stays inside the axes
        ax.annotate(labels[i], (xs[i], ys[i]), textcoords="offset points", fontsize=9,
                    xytext=(-7 if right_half else 7, dy), ha="right" if right_half else "left")


def pareto_front(cost: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices, by rising cost, of the points that no cheaper-or-equal point beats in accuracy."""
    front, best = [], -np.inf
    for i in np.lexsort((-accuracy, cost)):
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return np.asarray(front, dtype=int)


def write(report: Report, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / f"{report.name}.md", out / f"{report.name}.csv"
    md.write_text(markdown(report))
    csv.write_text(csv_text(report))
    return [md, csv, figure(report, out / f"{report.name}.png")]


def log_artifacts(tracker, report: Report, paths: list[Path]) -> None:
    """The report's files as artifacts of each study's parent run, under report/."""
    for run_id in dict.fromkeys(report.parents.values()):
        tracker.log_artifacts(run_id, paths, "report")


# --- command line ---------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="A study's runs from MLflow as a table, beside the paper and the peers, with plots.",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--study", help="a study name (studies/NAME.toml) or the path of a study TOML file")
    which.add_argument("--compare", nargs="+", metavar="STUDY", help="several studies' variants in one table")
    p.add_argument("--budget", help="the budget label to report (default: the one with the most finished runs)")
    p.add_argument("--dataset", help="the dataset to report (default: the one with the most finished runs)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--format", choices=("md", "csv", "json"), help="print the report in this format to stdout")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the .md, .csv and .png (default: {DEFAULT_OUT}/; "
                   "the reference reports in results/ change only when you name it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    names = [args.study] if args.study else args.compare
    if not names:
        raise BenchError("say what to report: --study NAME or --compare STUDY STUDY... "
                         "(python -m bench.ablation --list shows the studies)")
    if len(set(names)) != len(names):
        raise BenchError(f"--compare names a study twice: {' '.join(names)}")
    # Stamped into the md, csv and png and logged to MLflow: never with a password in it.
    command = redact("python -m bench.report " + shlex.join(sys.argv[1:] if argv is None else argv))
    tracker = open_store(args.tracking_uri)
    report = build(tracker, names, args.budget, args.dataset, command, args.tracking_uri)
    paths = write(report, Path(args.out))
    log_artifacts(tracker, report, paths)

    if args.format:
        print({"md": markdown, "csv": csv_text, "json": json_text}[args.format](report))
        return 0
    others = report.header["other budgets in MLflow"]
    console.print(f"reporting budget {escape(report.header['budget'])}; also in MLflow: {escape(others)}")
    out.print(rich_table(*display_rows(report.summary), title=escape(title(report))))
    for line in report.summary["verdict"]:
        if line and line != "reference":
            out.print(f"  {escape(line)}")
    if not report.published.empty:
        out.print(rich_table(list(report.published.columns), report.published.astype(str).values.tolist(),
                             title="published figures (different data or recipe, as labelled)"))
    console.print(f"wrote {', '.join(map(str, paths))} (also logged to the study's parent run under report/)")
    return 0


if __name__ == "__main__":
    cli(main)
