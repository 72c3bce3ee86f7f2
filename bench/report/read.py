"""Reading a study's runs from MLflow (through bench.tracking) into pandas, and choosing the one
budget and dataset to report, so that runs of different sizes never mix."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from rich.progress import track

from bench.config import REPORTED_SETTINGS, reported_setting
from bench.engine import record
from bench.errors import BenchError, redact
from bench.progress import console
from bench.run import studies

TAGS = {
    "variant": f"tags.{record.VARIANT}",
    "seed": f"tags.{record.SEED}",
    "config_hash": f"tags.{record.CONFIG_HASH}",
    "budget": f"tags.{record.BUDGET}",
    "dataset": f"tags.{record.DATASET}",
    "model": f"tags.{record.MODEL}",
    "device": f"tags.{record.DEVICE}",
    "torch": "tags.bench.torch",
    "commit": "tags.bench.commit",
    "host": "tags.bench.host",
    "parent_run_id": f"tags.{record.PARENT}",
}
EVAL_METRICS = "metrics.test_top"  # the paper protocol's per mode and test scale (bench.engine.evaluation.metric_name)
CURVE_METRICS = {"val_acc": "val_acc", "epoch_seconds": "epoch_seconds"}


def metric_columns() -> dict[str, str]:
    """Final numbers by column, as bench.engine.record declares them (images_per_s: the last epoch's)."""
    return {name: f"metrics.{metric}" for name, metric in record.reported().items()}


def run_columns() -> list[str]:
    return ["run_id", *TAGS, *REPORTED_SETTINGS, *metric_columns()]


def runs_frame(tracker, experiment_id: str, budget: str | None = None, hashes: set[str] | None = None) -> pd.DataFrame:
    """One row per FINISHED child run: variant, seed, config hash, budget, dataset, settings, final metrics."""
    runs = tracker.finished_runs([experiment_id], tags=None if budget is None else {"budget": budget})
    if runs.empty:
        return pd.DataFrame(columns=run_columns())
    logged = {
        name: runs.get(f"params.{name}", pd.Series(None, index=runs.index, dtype=object)) for name in REPORTED_SETTINGS
    }
    frame = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            **{name: runs.get(column) for name, column in TAGS.items()},
            **{
                name: values.map(lambda value, name=name: reported_setting(name, None if pd.isna(value) else value))
                for name, values in logged.items()
            },
            **{
                name: runs.get(column, pd.Series(float("nan"), index=runs.index))
                for name, column in metric_columns().items()
            },
        }
    )[run_columns()]
    modes = [c for c in runs.columns if c.startswith(EVAL_METRICS)]
    frame = frame.join(runs[modes].rename(columns=lambda c: c.removeprefix("metrics.")))
    if hashes is not None:
        frame = frame[frame["config_hash"].isin(hashes)]
    # Newest first (search_runs' order): a config trained twice counts once.
    frame = frame.drop_duplicates("config_hash").reset_index(drop=True)
    check_metrics(frame)
    return frame


def check_metrics(frame: pd.DataFrame) -> None:
    """Every declared final number is there for every run: a missing one is named, never read as None."""
    for name, column in metric_columns().items():
        missing = frame[name].isna()
        if missing.any():
            raise BenchError(
                f"finished run {frame.loc[missing, 'run_id'].iloc[0]} has no metric "
                f"{column.removeprefix('metrics.')!r} (the report's column {name}): it was "
                "logged by an older bench or cut off while logging; train it again, or delete it"
            )


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
        raise BenchError(
            f"study {study.name!r} has no variants to report (it is a search): "
            f"python -m bench.search --study {study.name}"
        )
    experiment_id = tracker.find_experiment(study.name)
    runs = runs_frame(tracker, experiment_id) if experiment_id is not None else pd.DataFrame(columns=run_columns())
    runs = runs[runs["variant"].notna()]  # search trials in the same experiment have no variant
    if runs.empty:
        raise BenchError(
            f"study {study.name!r} has no finished runs in {redact(tracker.uri)}; run it with: "
            f"{run_command(name, None, tracking_uri)}"
        )
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


def choose_slice(
    every: list[StudyRuns], budget: str | None, dataset: str | None, tracking_uri: str | None
) -> tuple[str, str]:
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
            raise BenchError(
                f"study {every[0].study.name!r} has no finished runs {wanted} (it has {held}); "
                f"run it with: {run_command(name, budget, tracking_uri, dataset)}"
            )
        held = "; ".join(f"{r.study}: {r.budget} on {r.dataset} ({r.runs} runs)" for r in counts.itertuples())
        raise BenchError(
            f"the studies share no budget and dataset with finished runs ({held}); "
            "run them at one budget, or pick one with --budget/--dataset"
        )
    best = shared.sort_values("runs", ascending=False, kind="stable").iloc[0]
    return best["budget"], best["dataset"]


def curves(tracker, runs: pd.DataFrame) -> pd.DataFrame:
    """Validation accuracy and training seconds per epoch of each run (step = epoch)."""
    columns = ["study", "variant", "seed", "epoch", *CURVE_METRICS]
    frames = []
    for run in track(list(runs.itertuples()), description="reading curves", console=console, transient=True):
        per_metric = [
            pd.Series(dict(tracker.metric_history(run.run_id, key)), name=name, dtype=float)
            for name, key in CURVE_METRICS.items()
        ]
        frame = pd.concat(per_metric, axis=1).rename_axis("epoch").reset_index()
        frames.append(frame.assign(study=run.study, variant=run.variant, seed=run.seed))
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
