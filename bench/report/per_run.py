"""The report's CSV: one row per run (variant, seed, every final metric, its convergence slope), so
that anyone can recompute each test, interval and verdict of the report from the file alone."""

from __future__ import annotations

import pandas as pd

from bench.report import stats

FIRST = ["study", "variant", "seed", "run_id", "test_acc_pct", "best_val_acc_pct", "convergence_slope"]
PERCENT = {"test_acc": "test_acc_pct", "best_val_acc": "best_val_acc_pct"}
DROPPED = (
    "config_hash",
    "budget",
    "dataset",
    "device",
    "torch",
    "commit",
    "host",
    "parent_run_id",
    "train_scale",
    "compute",
)  # the same for every run, or in the header: not per-run data


def frame(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Each run's final metrics in percent where they are accuracies, and its convergence slope
    (validation points per epoch over the window the report judges)."""
    table = runs.rename(columns=PERCENT).drop(columns=[c for c in DROPPED if c in runs])
    for column in [*PERCENT.values(), *(c for c in table if str(c).startswith("test_top"))]:
        table[column] = table[column].astype(float) * 100
    slopes = {}
    for (study, variant), curve in curves.groupby(["study", "variant"]):
        by_seed, _window = stats.seed_slopes(curve)
        slopes.update({(study, variant, str(seed)): slope for seed, slope in by_seed.items()})
    table["convergence_slope"] = [slopes.get((r.study, r.variant, str(r.seed))) for r in table.itertuples()]
    table = table[[*FIRST, *(c for c in table if c not in FIRST)]]
    return table.sort_values(["study", "variant", "seed"], key=natural, kind="stable").reset_index(drop=True)


def natural(column: pd.Series) -> pd.Series:
    """Seeds in numeric order (they are tags, so text), other columns as they are."""
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if column.name == "seed" and numbers.notna().all() else column
