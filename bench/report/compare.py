"""The comparisons a study names (bench.run.study_comparisons), tested on test accuracy over seeds with
Holm's correction over them, each beside the training compute its two sides consumed in all."""

from __future__ import annotations

import pandas as pd

from bench.report import stats

COLUMNS = [
    "variant",
    "reference",
    "analysis",
    "diff_pts",
    "ci_low_pts",
    "ci_high_pts",
    "p_value",
    "p_holm",
    "alpha_holm",
    "hedges_g",
    "seeds_for_power",
    "compute_ratio",
    "verdict",
]
TEXT = ("variant", "reference", "analysis", "verdict")
# Forward + backward of one image is about three forward passes (the backward pass costs two).
TRAIN_FLOPS_PER_FORWARD = 3


Pair = tuple[str, str]


def tested(grouped: dict[str, pd.DataFrame], pairs: list[Pair]) -> dict[Pair, stats.Comparison]:
    """Every pair whose two sides have finished runs, tested, Holm-adjusted over them, with power."""
    ready = [(a, b) for a, b in pairs if a in grouped and b in grouped]
    percent = {name: runs["test_acc"].astype(float) * 100 for name, runs in grouped.items()}
    results = stats.holm(
        [
            stats.compare(percent[a], percent[b], grouped[a]["seed"].tolist(), grouped[b]["seed"].tolist())
            for a, b in ready
        ]
    )
    return dict(zip(ready, map(stats.with_power, results)))


def train_compute(grouped: dict[str, pd.DataFrame], starts_from: dict[str, str]) -> dict[str, float]:
    """Each variant's training FLOPs per training image over its whole run, mean over seeds, with the
    run its weights started from counted in (init-from-a's nets have had A's epochs too)."""
    own = {}
    for name, runs in grouped.items():
        epochs = (runs["epochs"] * runs["compute_scale"]).astype(float) if "epochs" in runs else 1.0
        own[name] = float((TRAIN_FLOPS_PER_FORWARD * runs["flops"].astype(float) * epochs).mean())
    return {name: value + own.get(starts_from.get(name, ""), 0.0) for name, value in own.items()}


def numbers(c: stats.Comparison) -> dict[str, float | str]:
    """A comparison's numbers under the report's column names (the comparisons table, the summary)."""
    return {
        "analysis": c.analysis,
        "diff_pts": c.diff,
        "ci_low_pts": c.low,
        "ci_high_pts": c.high,
        "p_value": c.p,
        "p_holm": c.p_holm,
        "hedges_g": c.hedges_g,
        "seeds_for_power": c.seeds_for_power,
    }


def frame(
    pairs: list[Pair],
    results: dict[Pair, stats.Comparison],
    verdicts: dict[Pair, str],
    compute: dict[str, float],
    inherited: set[str],
) -> pd.DataFrame:
    """One row per named comparison, in the study's order; the compute ratio where a side's weights
    started from another run (elsewhere the FLOPs column already tells the cost)."""
    rows = []
    for a, b in pairs:
        row = {"variant": a, "reference": b, "verdict": verdicts[(a, b)]}
        if {a, b} & inherited and a in compute and b in compute and compute[b] > 0:
            row["compute_ratio"] = compute[a] / compute[b]
        c = results.get((a, b))
        if c is not None:
            row.update(numbers(c), alpha_holm=c.alpha)
        rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    return out.astype({c: float for c in COLUMNS if c not in TEXT})


def missing(a: str, b: str, grouped: dict[str, pd.DataFrame]) -> str:
    """The verdict of a comparison one of whose sides has no finished runs."""
    absent = [name for name in (b, a) if name not in grouped]
    return f"{a} vs {b}: no finished runs of {' or '.join(absent)} to compare"


def starts_from(variants: dict[str, dict]) -> dict[str, str]:
    """Variants that start from another variant's trained weights (init_from_a), and that variant:
    the study's plain vgg-a, which the runner trains first."""
    plain_a = [n for n, s in variants.items() if s.get("model") == "vgg-a" and not s.get("init_from_a")]
    if not plain_a:
        return {}
    return {n: plain_a[0] for n, s in variants.items() if s.get("init_from_a")}
