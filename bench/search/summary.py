"""The end of a search: its summary on the parent run, and the outcome on the terminal.

When no trial is left running or queued, the parent run gets the best trial (metrics best.value,
best.trial and best.<param>, tags best.<param> for categorical values; metrics, stepped by the
number of complete trials, because a resumed search may find a better one), the parameter
importances (metrics importance.<param>; skipped with a note below 2 complete trials or 2
parameters) and Optuna's plots as PNGs under search/.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.markup import escape
from rich.table import Table

from bench.progress import out
from bench.search.job import SearchJob, best_trial, standing, tally
from bench.tracking import registry_name

matplotlib.use("Agg")  # no display needed (pyplot, imported already, switches to it)

TOP_ROWS = 10


def log_summary(job: SearchJob) -> list[str]:
    """Best trial, importances and Optuna's plots on the parent run; returns notes for the person."""
    study, tracker, parent = job.study, job.tracker, job.parent_run_id
    complete = [t for t in standing(study) if t.state == TrialState.COMPLETE]  # a refilled one once
    if not complete:
        return ["no trial completed: nothing to summarise in MLflow"]
    notes = []
    best = best_trial(study)
    metrics = {"best.value": best.value, "best.trial": best.number}
    for key, value in best.params.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[f"best.{key}"] = value
        else:  # MLflow metrics are numbers; and params could not change when a resumed search finds better
            tracker.set_tags(parent, {f"best.{key}": value})
    importances = {}
    names = {k for t in complete for k in t.params}
    if len(complete) < 2 or len(names) < 2:
        notes.append(
            f"parameter importances need 2+ complete trials and 2+ parameters "
            f"({len(complete)} complete, {len(names)} parameter(s)): skipped"
        )
    else:
        importances = optuna.importance.get_param_importances(study)
        metrics.update({f"importance.{k}": v for k, v in importances.items()})
    # step = complete trials so far: a resumed search adds points instead of overwriting
    tracker.log_metrics(parent, metrics, step=len(complete))
    trained = [t for t in complete if "mlflow_run_id" in t.user_attrs]  # a repeat has no run of its own
    if trained:
        best_run = max(trained, key=lambda t: t.value).user_attrs["mlflow_run_id"]
        version = tracker.register_best(job.optuna_name, best_run)
        notes.append(
            f"best trial's model registered as models:/{registry_name(job.optuna_name)}@best (version {version})"
        )
    log_files(job, with_importances=bool(importances))
    return notes


def log_files(job: SearchJob, with_importances: bool) -> None:
    """Every trial (csv), the best ones in words (md) and Optuna's plots, under search/ on the parent run."""
    study = job.study
    plots = {
        "optimization_history": optuna.visualization.matplotlib.plot_optimization_history,
        "parallel_coordinate": optuna.visualization.matplotlib.plot_parallel_coordinate,
    }
    if with_importances:
        plots["param_importances"] = optuna.visualization.matplotlib.plot_param_importances
    with tempfile.TemporaryDirectory() as tmp:
        study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs")).to_csv(
            Path(tmp, "trials.csv"), index=False
        )
        Path(tmp, "summary.md").write_text(summary_markdown(study, job.optuna_name))
        for file, plot in plots.items():
            axes = plot(study)
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            figure.savefig(Path(tmp, f"{file}.png"), dpi=110, bbox_inches="tight")
            plt.close(figure)
        job.tracker.log_artifacts(job.parent_run_id, sorted(Path(tmp).iterdir()), "search")


def summary_markdown(study: optuna.Study, name: str, rows: int = TOP_ROWS) -> str:
    counts = tally(study)
    lines = [
        f"# {name}",
        "",
        f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed; objective: best validation accuracy.",
        "",
        "| trial | val acc | params | MLflow run |",
        "|---:|---:|---|---|",
    ]
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -t.value)
    for trial in complete[:rows]:
        lines.append(
            f"| {trial.number} | {trial.value:.4f} | {params_text(trial.params)} | "
            f"{trial.user_attrs.get('mlflow_run_id', '')} |"
        )
    return "\n".join(lines) + "\n"


def top_trials_table(study: optuna.Study, title: str, rows: int = TOP_ROWS) -> Table:
    """Complete trials by value, then pruned ones by their best epoch, then failed ones."""

    def score(trial: FrozenTrial) -> tuple:
        rank = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2}.get(trial.state, 3)
        return rank, -(_reached(trial) or 0.0)

    trials = sorted(standing(study), key=score)
    table = Table(title=escape(title), caption=f"{len(trials) - rows} more not shown" if len(trials) > rows else None)
    for column in ("trial", "state", "val acc", "epochs", "params"):
        table.add_column(column, justify="left" if column in ("state", "params") else "right")
    colours = {TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow", TrialState.FAIL: "red"}
    for trial in trials[:rows]:
        reached = _reached(trial)
        colour = colours.get(trial.state, "white")
        repeat = f" (repeat of {trial.user_attrs['repeat_of']})" if "repeat_of" in trial.user_attrs else ""
        table.add_row(
            str(trial.number),
            f"[{colour}]{trial.state.name.lower()}[/]{repeat}",
            "" if reached is None else f"{reached:.4f}",
            str(len(trial.intermediate_values)),
            escape(params_text(trial.params)),
        )
    return table


def _reached(trial: FrozenTrial) -> float | None:
    """A complete trial's value; otherwise the best validation accuracy it reported."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    return max(trial.intermediate_values.values(), default=None)


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def print_outcome(study: optuna.Study, wanted: int) -> None:
    """The top trials, the counts and the best trial, on stdout."""
    out.print(top_trials_table(study, f"{study.study_name}: top trials by best validation accuracy"))
    counts = tally(study)
    out.print(
        f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed of {wanted} wanted"
    )
    best = best_trial(study)
    if best is not None:
        out.print(
            f"best: trial {best.number}, val acc [bold green]{best.value:.4f}[/], " + escape(params_text(best.params))
        )
