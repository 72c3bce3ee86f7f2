"""A study's Optuna study and its MLflow parent run, opened together (created, or loaded to resume); the
parent runs that an Optuna study lost before left RUNNING are closed."""

from __future__ import annotations

from typing import Any

import optuna

from bench import progress as progress_ui
from bench.run.optuna_storage import describe_storage, open_storage
from bench.tracking import Tracker

OBJECTIVE = "val_acc"  # every trial's value: its best validation accuracy


def open_study(
    optuna_name: str,
    storage_url: str | None,
    tracker: Tracker,
    experiment_name: str,
    parent_tags: dict[str, Any],
    direction: str = "maximize",
    sampler=None,
    pruner=None,
    storage=None,
):
    """Create or load the Optuna study `optuna_name` (one per study at one budget) and its parent run,
    named the same, in the MLflow experiment `experiment_name` (one per study); call under storage_lock.

    `storage` is the already opened storage_url, when the caller checked it early.
    Returns (study, experiment_id, parent_run_id).
    """
    storage = storage or open_storage(storage_url)
    study = optuna.create_study(
        study_name=optuna_name,
        storage=storage,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if study.metric_names is None:  # the dashboard's axis: "val_acc", not "Objective 0"
        study.set_metric_names([OBJECTIVE])
    experiment_id = tracker.experiment_id(experiment_name)
    parent_id = study.user_attrs.get("mlflow_parent_run_id")
    if parent_id is not None and not tracker.run_exists(parent_id):
        parent_id = None  # the MLflow store was replaced: start a new parent there
    if parent_id is None:
        parent_id = tracker.create_parent(
            experiment_id,
            optuna_name,
            {
                "bench.study": experiment_name,
                "bench.optuna_study": optuna_name,
                "bench.storage": describe_storage(storage_url),
                **parent_tags,
            },
        )
        study.set_user_attr("mlflow_parent_run_id", parent_id)
        close_orphans(tracker, experiment_id, optuna_name, describe_storage(storage_url), parent_id)
    return study, experiment_id, parent_id


def close_orphans(tracker: Tracker, experiment_id: str, optuna_name: str, storage: str, parent_id: str) -> None:
    """Close the parent runs left RUNNING by this study's Optuna study in this storage before it was
    lost (a deleted journal): no worker can ever end them. KILLED, with a note naming the new parent."""
    for run in tracker.child_runs(experiment_id, role="study"):
        tags = run.data.tags
        if (
            run.info.run_id == parent_id
            or run.info.status != "RUNNING"
            or (tags.get("bench.optuna_study"), tags.get("bench.storage")) != (optuna_name, storage)
        ):
            continue
        note = f"its Optuna study {optuna_name} in {storage} was lost; the study goes on under parent run {parent_id}"
        tracker.set_status(run.info.run_id, "KILLED", state="superseded", superseded_by=parent_id, note=note)
        progress_ui.console.print(
            f"note: parent run {run.info.run_id} closed (KILLED): {note}", markup=False, highlight=False
        )
