"""One row per variant of a study: seeds, cost, accuracy (mean and std, percent), its comparison with the
reference or the study's pairs (Holm-adjusted), convergence, time to accuracy and the paper's row at its
configuration; and one row per comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import compare, reference, stats
from bench.report.published_figures import scale_protocol

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
