"""The report as text: the terminal table (rich), markdown, CSV and JSON. One set of display cells
serves the terminal and the markdown file, so they never disagree."""

from __future__ import annotations

import json

import pandas as pd
from rich.markup import escape
from rich.table import Table

from bench.data.views import PAPER_CROP, proportional
from bench.report import markdown as md
from bench.report import per_run, stats
from bench.report.build import COMPUTE_LABELS, Report
from bench.report.variant_rows import summarize

TEXT_COLUMNS = ("study", "variant", "vs", "metric", "theirs", "source", "label", "converged", "test")


def display_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The summary as text cells, shared by the terminal table and the markdown file: cost, accuracy,
    convergence and time to accuracy beside it, and the difference from the reference."""
    several = "study" in summary and summary["study"].nunique() > 1
    compared = summary["verdict"].ne("").any()
    judged = summary["converged"].notna().any()
    targets = summary["target_val_acc_pct"].dropna().unique()
    headers = (["study"] if several else []) + [
        "variant",
        "runs",
        "params",
        "MFLOPs",
        "best val %",
        "test %",
        "top-1 err %",
        "train s",
        "img/s",
    ]
    if summary["compute"].ne("epochs").any():
        headers += ["epochs"]
    if judged:
        headers += ["converged (val pts/ep)"]
    if len(targets):
        target = f"{targets[0]:g}%" if len(targets) == 1 else "target"
        headers += [f"epochs to val {target}", f"train s to val {target}"]
    if compared:
        headers += ["Δ test pts (95% CI)", "Holm p"]
    rows = []
    for r in summary.itertuples():
        cells = ([r.study] if several else []) + [
            r.variant,
            str(r.runs),
            f"{r.params:,.0f}",
            f"{r.flops / 1e6:,.1f}",
            mean_std(r.best_val_acc_pct, r.best_val_acc_pct_std),
            mean_std(r.test_acc_pct, r.test_acc_pct_std),
            f"{r.top1_err_pct:.2f}",
            f"{r.train_seconds:.0f}",
            "" if pd.isna(r.images_per_s) else f"{r.images_per_s:,.0f}",
        ]
        if "epochs" in headers:
            cells += [number(r.epochs_trained, ".2f")]
        if judged:
            cells += ["" if pd.isna(r.converged) else f"{r.converged} ({number(r.convergence_slope, '+.2f')})"]
        if len(targets):
            cells += time_to_target(r)
        if compared:
            cells += [difference(r), p_text(r.p_holm)]
        rows.append(cells)
    return headers, rows


def comparison_rows(comparisons: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Each comparison in full: the test used, raw and Holm p, effect size, power at Holm's α, and,
    where the two sides consumed different training compute in all, how much more."""
    several = "study" in comparisons and comparisons["study"].nunique() > 1
    ratios = comparisons["compute_ratio"] if "compute_ratio" in comparisons else pd.Series(dtype=float)
    counted = bool(ratios.notna().any())
    headers = (["study"] if several else []) + [
        "variant",
        "vs",
        "Δ test pts (95% CI)",
        "test",
        "p",
        "Holm p",
        "Hedges g",
        f"seeds for {stats.POWER:.0%} power at Holm's α",
    ]
    headers += ["compute vs (all)"] if counted else []
    rows = []
    for r in comparisons[comparisons["analysis"].notna()].itertuples():
        rows.append(
            ([r.study] if several else [])
            + [
                r.variant,
                r.reference,
                difference(r),
                r.analysis,
                p_text(r.p_value),
                p_text(r.p_holm),
                number(r.hedges_g, "+.2f"),
                number(r.seeds_for_power, ".0f"),
            ]
            + ([number(r.compute_ratio, ".2f") + "x"] if counted else [])
        )
    return headers, rows


def variant_table(
    frame: pd.DataFrame, title: str, order: list[str] | None = None, reference_name: str | None = None
) -> Table:
    return rich_table(*display_rows(summarize(frame, order, reference_name)), title=title)


def rich_table(headers: list[str], rows: list[list[str]], title: str) -> Table:
    table = Table(title=title)
    for column in headers:
        table.add_column(escape(column), justify="left" if column.split(" ")[0] in TEXT_COLUMNS else "right")
    for row in rows:
        table.add_row(*map(escape, row))
    return table


def mean_std(mean: float, std: float) -> str:
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def number(value, spec: str) -> str:
    return "" if pd.isna(value) else format(value, spec)


def p_text(p) -> str:
    return "" if pd.isna(p) else stats.format_p(p)


def difference(row) -> str:
    if row.verdict == "reference":
        return "reference"
    if pd.isna(row.diff_pts):
        return ""
    if pd.isna(row.ci_low_pts):
        return f"{row.diff_pts:+.2f} (no interval)"
    return f"{row.diff_pts:+.2f} ({row.ci_low_pts:.2f} to {row.ci_high_pts:.2f})"


def time_to_target(row) -> list[str]:
    """Epochs and training seconds to first reach the target; 'k/n seeds' where not every seed did."""
    if pd.isna(row.target_val_acc_pct):
        return ["", ""]
    if pd.isna(row.epochs_to_target):
        return [f"not reached (0/{row.runs})", ""]
    partial = "" if row.reached_target == f"{row.runs}/{row.runs}" else f" ({row.reached_target} seeds)"
    return [f"{row.epochs_to_target:.1f}{partial}", f"{row.seconds_to_target:.0f}{partial}"]


def verdict_lines(summary: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> list[str]:
    """Every comparison's verdict, and the convergence of a reference that had not surely converged."""
    lines = [
        f"{r.variant} (reference): {r.convergence}"
        for r in summary.itertuples()
        if r.verdict == "reference" and r.converged in ("no", "uncertain")
    ]
    chosen = summary if comparisons is None else comparisons
    return lines + [r.verdict for r in chosen.itertuples() if r.verdict and r.verdict != "reference"]


ANALYSIS = (
    "a paired t-test on the per-seed differences where both have exactly the same seeds (a seed fixes the data "
    "split and the batch order, so same-seed runs pair), Welch's t-test otherwise (the test column says which); "
    f"{stats.CONFIDENCE:.0%} CI of the difference; p raw and Holm-adjusted over the study's comparisons (the verdict "
    "uses Holm's p); Hedges' g (standardised difference, small-sample corrected); the seeds per variant that "
    f"the same test would need to detect the observed difference with {stats.POWER:.0%} power "
    f"(two-sided) at the α Holm held that comparison to: {stats.ALPHA:.2f}/m for the smallest of m raw "
    f"p-values, {stats.ALPHA:.2f}/(m-1) "
    "for the next, and so on."
)
COMPUTE_NOTE = (
    "compute vs (all): the variant's training FLOPs over everything its weights went through (3x "
    "forward FLOPs x epochs, with the run it started from counted in: init-from-a's nets have had A's "
    "epochs too) over the other "
    "side's."
)


def markdown(report: Report) -> str:
    summary = report.summary
    headers, rows = display_rows(summary)
    lines = [f"# {report.title}", ""]
    lines += [f"- {key}: {md.cell(value)}" for key, value in report.header.items()]
    lines += ["", md.table(headers, rows), ""]
    equal = summary[summary["compute"].ne("epochs")]
    if not equal.empty:
        lines += [
            f"Compute: {COMPUTE_LABELS.get(equal['compute'].iloc[0], equal['compute'].iloc[0])} — every variant "
            "trained as many steps as give it the reference's training FLOPs (steps and learning-rate schedule "
            "scaled by the reference's FLOPs per image over its own), so cheaper nets trained more epochs; "
            "the epochs column says how many.",
            "",
        ]
    verdicts = verdict_lines(summary, report.comparisons)
    if not report.comparisons.empty:
        lines += [
            f"The comparisons each study names ([comparisons] in its TOML; without one, each "
            f"variant against "
            f"the reference) on test accuracy over seeds: {ANALYSIS}",
            "",
        ]
        headers, rows = comparison_rows(report.comparisons)
        lines += [md.table(headers, rows), ""]
        lines += [COMPUTE_NOTE, ""] if "compute vs (all)" in headers else []
        lines += [f"- {md.cell(v)}" for v in verdicts] + [""]
    else:
        lines += ["No comparisons: the study names no reference variant or comparisons, or one alone has runs.", ""]
    if report.confirmation:
        lines += [
            "Confirmation at twice the epochs (the same comparisons at the budget NAME-2x beside NAME: "
            "under a cosine schedule a curve flattens because the learning rate does, so a ranking that "
            "holds at 2x epochs did not come from stopping early):",
            "",
        ]
        lines += [f"- {md.cell(line)}" for line in report.confirmation] + [""]
    judged = summary[summary["convergence"].notna()]
    if not judged.empty:
        lines += [f"Convergence ({stats.CONVERGENCE_RULE}):", ""]
        lines += [f"- {md.cell(r.variant)}: {md.cell(r.convergence)}" for r in judged.itertuples()] + [""]
    if summary["target_val_acc_pct"].notna().any():
        lines += [
            "Time to accuracy (DAWNBench style): the first epoch at which validation accuracy reached the "
            "target, and the training seconds (evaluation excluded) spent until then, means over the seeds "
            "that reached it; set per study (target_val_acc_pct in its TOML) or with --target-val-acc.",
            "",
        ]
    if not report.published.empty:
        lines += ["Published figures beside ours (different data or recipe, as labelled; not like for like):", ""]
        lines += [md.table(list(report.published.columns), report.published.astype(str).values.tolist()), ""]
        if report.published["metric"].str.contains("S=").any():
            lines += [
                f"S (training scale) and Q (test scales) are the paper's, for its {PAPER_CROP} px crop; runs at "
                f"a smaller crop used them in proportion (S=256 at a 32 px crop is a {proportional(256, 32)} px "
                "shorter side). Our errors are means over seeds; the paper's rows are ImageNet.",
                "",
            ]
    lines += [f"![validation accuracy per epoch; test accuracy against params and FLOPs]({report.name}.png)", ""]
    lines += [
        "Accuracies are means over seeds ± their standard deviation (n-1); top-1 error is 100 minus the mean "
        "test accuracy; train s and img/s (last epoch) are means over seeds; MFLOPs are forward FLOPs for "
        "one image.",
        "",
    ]
    return "\n".join(lines)


def csv_text(report: Report) -> str:
    """A row per run (variant, seed, every final metric, convergence slope) under the provenance."""
    header = "".join(f"# {key}: {value}\n" for key, value in report.header.items())
    return header + per_run.frame(report.runs, report.curves).to_csv(index=False)


def json_text(report: Report) -> str:
    return json.dumps(
        {
            "studies": report.studies,
            "title": report.title,
            "budget": report.budget,
            "dataset": report.dataset,
            "provenance": report.header,
            "other_budgets": json.loads(report.others.to_json(orient="records", double_precision=15)),
            "variants": json.loads(report.summary.to_json(orient="records", double_precision=15)),
            "comparisons": json.loads(report.comparisons.to_json(orient="records", double_precision=15)),
            "confirmation": report.confirmation,
            "published": json.loads(report.published.to_json(orient="records", double_precision=15)),
        },
        indent=2,
    )
