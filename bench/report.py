"""Reports: a study's runs from MLflow, side by side, as tables (and, later, plots and files)."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

COLUMNS = {
    "params": "metrics.params",
    "flops": "metrics.flops",
    "best_val_acc": "metrics.best_val_acc",
    "test_acc": "metrics.test_acc",
    "train_seconds": "metrics.train_seconds",
}


def runs_frame(tracker, experiment_id: str, budget: str | None = None, hashes: set[str] | None = None) -> pd.DataFrame:
    """One row per FINISHED child run: variant, seed, config hash and the final metrics."""
    import mlflow

    query = "tags.`bench.role` = 'run' and attributes.status = 'FINISHED'"
    if budget is not None:
        query += f" and tags.`bench.budget` = '{budget}'"
    runs = mlflow.search_runs([experiment_id], filter_string=query, max_results=50000)
    if runs.empty:
        return pd.DataFrame(columns=["variant", "seed", "config_hash", *COLUMNS])
    frame = pd.DataFrame({
        "variant": runs["tags.bench.variant"],
        "seed": runs["tags.bench.seed"],
        "config_hash": runs["tags.bench.config_hash"],
        **{name: runs.get(column) for name, column in COLUMNS.items()},
    })
    if hashes is not None:
        frame = frame[frame["config_hash"].isin(hashes)]
    return frame.drop_duplicates("config_hash").reset_index(drop=True)


def variant_table(frame: pd.DataFrame, title: str, order: list[str] | None = None) -> Table:
    table = Table(title=title)
    for column in ("variant", "runs", "params", "MFLOPs", "best val acc", "test acc", "train s"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    grouped = frame.groupby("variant", sort=False)
    names = [v for v in (order or []) if v in grouped.groups] + [v for v in grouped.groups if v not in (order or [])]
    for name in names:
        runs = grouped.get_group(name)
        table.add_row(
            name,
            str(len(runs)),
            f"{runs['params'].iloc[0]:,.0f}",
            f"{runs['flops'].iloc[0] / 1e6:,.1f}",
            _mean_std(runs["best_val_acc"]),
            _mean_std(runs["test_acc"]),
            f"{runs['train_seconds'].mean():.0f}",
        )
    return table


def _mean_std(values: pd.Series) -> str:
    if len(values) < 2:
        return f"{values.mean():.4f}"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"
