"""What a run leaves behind, declared once: tag keys, artifact paths and metric names.

MLflow-free: bench.tracking writes a run from these names, bench.report reads it back with them.
The metrics come from the engine's own dataclasses (bench.engine.results.EpochStats and Result): a field
whose metadata names a "metric" is logged under that name, and one marked "report" is a column
the report reads. Adding a final metric is adding a field there, and its display in the report.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from bench.engine import results

# --- tag keys ------------------------------------------------------------------------------------
ROLE = "bench.role"  # "study" (a parent), "run" (a variant x seed or a trial), "post" (bench.post)
CONFIG_HASH = "bench.config_hash"
BUDGET = "bench.budget"
DATASET = "bench.dataset"
MODEL = "bench.model"
VARIANT = "bench.variant"
SEED = "bench.seed"
DEVICE = "bench.device"
PRECISION = "bench.precision"
DATA_PREFIX = "bench.data."  # the split's facts (sizes, seed, digest), one tag each
PARENT = "mlflow.parentRunId"
DESCRIPTION = "mlflow.note.content"  # a run's, experiment's or model's description in the UI
EXPERIMENT_KIND = "mlflow.experimentKind"  # read by the UI (MLflow 3) to choose the experiment's view
# What the UI's Source column shows: the command that made the run, and the project's commit.
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
SOURCE_COMMIT = "mlflow.source.git.commit"

# --- artifacts and logged models -----------------------------------------------------------------
CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT = f"{CHECKPOINTS}/best.pt"
PLOTS = "plots"
REPORT = "report"
SERVABLE = "model"  # the pyfunc that takes images as people have them
NETWORK = "module"  # the bare network, for mlflow.pytorch
BEST_ALIAS = "best"


def _metrics(cls: type, *, reported: bool = False) -> dict[str, str]:
    """Field name -> MLflow metric name, for the fields of `cls` that declare one."""
    return {
        f.name: f.metadata["metric"]
        for f in fields(cls)
        if "metric" in f.metadata and (f.metadata["report"] or not reported)
    }


def epoch_metrics() -> dict[str, str]:
    """Logged every epoch, at step = epoch."""
    return _metrics(results.EpochStats)


def final_metrics() -> dict[str, str]:
    """Logged once a run has finished."""
    return _metrics(results.Result)


def epoch_values(stats: results.EpochStats) -> dict[str, float]:
    return {name: float(getattr(stats, field)) for field, name in epoch_metrics().items()}


def final_values(result: results.Result) -> dict[str, float]:
    """The final metrics, with the paper's evaluation modes when they were asked for."""
    return {**{name: float(getattr(result, field)) for field, name in final_metrics().items()}, **result.evaluations}


def reported() -> dict[str, str]:
    """Column -> metric name of the numbers the report reads: final ones, and the last epoch's."""
    return {**_metrics(results.Result, reported=True), **_metrics(results.EpochStats, reported=True)}


def data_tags(info: dict[str, Any]) -> dict[str, str]:
    return {f"{DATA_PREFIX}{k}": str(v) for k, v in info.items()}
