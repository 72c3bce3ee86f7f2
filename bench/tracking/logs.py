"""What a run logs: epochs and final numbers (named by bench.engine.record), plots, the checkpoint, its
dataset, MLflow's system metrics, and the parent's per-variant summary."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from bench import provenance
from bench.config import RunConfig
from bench.engine import plots, record

SYSTEM_METRICS_INTERVAL_S = 5.0
# A run's split as a one-row table (log_dataset). Its schema is given: inferred, MLflow warns on every
# run that integer columns cannot hold missing values, which matters for model inputs, not this record.
SPLIT_SCHEMA = Schema(
    [
        ColSpec("long", "n_train"),
        ColSpec("long", "n_val"),
        ColSpec("long", "n_test"),
        ColSpec("long", "split_seed"),
        ColSpec("long", "subset", required=False),
        ColSpec("long", "image_size"),
        ColSpec("string", "split_hash"),
    ]
)
SUMMARY_STEP = 0  # one point per summary metric: the UI draws the final value, not a curve


class Logging:
    client: MlflowClient
    uri: str

    def log_epoch(self, run_id: str, stats) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, stats.epoch) for k, v in record.epoch_values(stats).items()]
        self.client.log_batch(run_id, metrics=metrics)

    def log_metrics(self, run_id: str, values: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def logged_epochs(self, run_id: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, record.epoch_metrics()["val_acc"])}

    def log_result(self, run_id: str, config: RunConfig, result, title: str) -> None:
        """Final numbers, the epochs a kill kept from MLflow, plots, checkpoint and the servable model."""
        logged = self.logged_epochs(run_id)
        for stats in result.history:
            if stats.epoch not in logged:
                self.log_epoch(run_id, stats)
        kept = self.client.get_run(run_id).data.metrics  # by an attempt killed after logging them
        self.log_metrics(run_id, {k: v for k, v in record.final_values(result).items() if k not in kept})
        self.client.log_batch(
            run_id,
            tags=[
                RunTag(record.DEVICE, provenance.device_name(result.device)),
                RunTag(record.PRECISION, result.precision),
                *[RunTag(k, v) for k, v in record.data_tags(result.data_info).items()],
            ],
        )
        self.log_dataset(run_id, result.data_info)
        with tempfile.TemporaryDirectory() as tmp:
            plots.learning_curves(result.history, Path(tmp, "learning_curves.png"), title)
            plots.confusion_matrix(
                result.labels,
                result.predictions,
                result.classes,
                Path(tmp, "confusion_matrix.png"),
                f"{title}: test set",
            )
            self.client.log_artifacts(run_id, tmp, record.PLOTS)
        if result.best_checkpoint:
            self.client.log_artifact(run_id, result.best_checkpoint, record.CHECKPOINTS)
        self.log_model(run_id, config, result)

    def log_variant_summary(
        self, parent_id: str, experiment_id: str, budget: str, step: int = SUMMARY_STEP
    ) -> dict[str, dict]:
        """Mean and std of test accuracy and the count of runs per variant, on the parent run.
        Logged at one step, and only what changed: a chart shows the final value, not a curve, and a
        study run again that changed nothing adds nothing."""
        runs = self.finished_runs([experiment_id], tags={"budget": budget})
        if runs.empty or f"tags.{record.VARIANT}" not in runs:
            return {}
        runs = runs.drop_duplicates(f"tags.{record.CONFIG_HASH}")
        summary = {}
        for variant, group in runs.groupby(f"tags.{record.VARIANT}"):
            acc = group[f"metrics.{record.final_metrics()['test_acc']}"].dropna()
            std = float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
            summary[variant] = {"test_acc_mean": float(acc.mean()), "test_acc_std": std, "n": len(acc)}
        values = {f"{key}.{variant}": value for variant, numbers in summary.items() for key, value in numbers.items()}
        logged = self.client.get_run(parent_id).data.metrics
        self.log_metrics(parent_id, {k: v for k, v in values.items() if logged.get(k) != v}, step=step)
        return summary

    def log_artifacts(self, run_id: str, paths: list[str | Path], folder: str) -> None:
        for path in paths:
            self.client.log_artifact(run_id, str(path), folder)

    def log_file(self, run_id: str, path: str | Path, folder: str) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def log_dataset(self, run_id: str, info: dict[str, Any]) -> None:
        """The run's data as an MLflow dataset input (the runs table's Dataset column): its name,
        a digest of the recorded split, where it came from, and its sizes as its profile (the UI's
        Dataset drawer shows the profile's num_rows: the training images, not the one-row record)."""
        frame = pd.DataFrame([{name: info.get(name) for name in SPLIT_SCHEMA.input_names()}])
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local path, as meant
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                frame,
                source=str(info.get("source", "unknown")),
                name=str(info.get("dataset")),
                digest=str(info.get("split_hash"))[:36],
            )
        dataset.schema = SPLIT_SCHEMA  # a cached property: set, it is never inferred
        entity = dataset._to_mlflow_entity()
        sizes = {k: info.get(k) for k in ("n_train", "n_val", "n_test")}
        profile = {"num_rows": sizes["n_train"], **sizes}
        entity = DatasetEntity(
            entity.name, entity.digest, entity.source_type, entity.source, entity.schema, json.dumps(profile)
        )
        context = InputTag(MLFLOW_DATASET_CONTEXT, "train")
        inputs = [DatasetInput(entity, tags=[context])]
        try:
            self.client.log_inputs(run_id, datasets=inputs)
        except MlflowException as error:
            # Two workers' runs logging the same new dataset at once: MLflow's store looks for it,
            # finds nothing in both, and the second insert breaks the unique key. Once more, it finds
            # the dataset the first one committed and only links this run to it.
            if not _is_duplicate_dataset(error):
                raise
            self.client.log_inputs(run_id, datasets=inputs)

    @contextlib.contextmanager
    def system_metrics(self, run_id: str, enabled: bool = True):
        """MLflow's own CPU, memory, disk, network (and GPU) sampler on a run while the block runs.

        Runs here are made by the client, not by mlflow.start_run, so the monitor is started by
        hand, as start_run(log_system_metrics=True) would."""
        if not enabled:
            yield
            return
        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, resume_logging=True, tracking_uri=self.uri
        )
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()


def _is_duplicate_dataset(error: MlflowException) -> bool:
    """The datasets table's unique key broken, as PostgreSQL, SQLite and MySQL word it."""
    text = str(error)
    return "dataset_pk" in text or "UNIQUE constraint failed: datasets" in text or "Duplicate entry" in text
