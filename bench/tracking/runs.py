"""Experiments and runs: the study's experiment, its parent run, a child per grid point or trial
(found again by its config hash, so a run cut off resumes on the same MLflow run), statuses, and
the runs bench.predict and bench.post read or add."""

from __future__ import annotations

import os
import socket
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from bench import provenance
from bench.config import RunConfig
from bench.device import resolve_device
from bench.engine import record
from bench.errors import BenchError, one_line, redact
from bench.tracking import store

ACTIVE = ("RUNNING", "SCHEDULED")
FINISHED_CHILDREN = f"tags.`{record.ROLE}` = 'run' and attributes.status = 'FINISHED'"
# MLflow strips a filter value's quotes and unescapes nothing: a value holding one of these cannot be
# matched exactly in a filter string, so such values are compared here instead (see tag_filter).
UNQUOTABLE = set("'\"`\\")


class Runs:
    client: MlflowClient
    uri: str

    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            # Marked as model training, so the UI opens on runs, not on its GenAI (traces) view.
            return self.client.create_experiment(
                name,
                artifact_location=store.artifact_location(self.uri, name),
                tags={
                    record.EXPERIMENT_KIND: "custom_model_development",
                    record.DESCRIPTION: (
                        f"Study `{name}`: one parent run per budget, a child run per variant and seed (or per "
                        "trial of a search). Group by bench.variant to see the variants side by side."
                    ),
                },
            )
        except Exception:  # another worker created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def find_experiment(self, name: str) -> str | None:
        experiment = self.client.get_experiment_by_name(name)
        return None if experiment is None else experiment.experiment_id

    def create_parent(self, experiment_id: str, name: str, tags: dict[str, Any]) -> str:
        run = self.client.create_run(
            experiment_id, run_name=name, tags={record.ROLE: "study", **source_tags(), **_str_values(tags)}
        )
        return run.info.run_id

    def child_runs(self, experiment_id: str, **tags: str) -> list:
        """The runs whose bench.<key> tags have these values, newest first."""
        runs = self.client.search_runs(
            [experiment_id], filter_string=tag_filter(tags), order_by=["attributes.start_time DESC"], max_results=5000
        )
        return [r for r in runs if all(r.data.tags.get(f"bench.{k}") == str(v) for k, v in tags.items())]

    def finished_hashes(self, experiment_id: str) -> set[str]:
        """The config hashes of every finished child run of an experiment."""
        runs = self.client.search_runs([experiment_id], FINISHED_CHILDREN, max_results=50000)
        return {r.data.tags.get(record.CONFIG_HASH) for r in runs}

    def finished_run(self, experiment_id: str, config_hash: str):
        for run in self.child_runs(experiment_id, config_hash=config_hash):
            if run.info.status == "FINISHED":
                return run
        return None

    def fetch_best_checkpoint(self, experiment_id: str, config_hash: str, dest: Path) -> Path | None:
        """The best checkpoint logged by the finished run of `config_hash`, downloaded into `dest`."""
        run = self.finished_run(experiment_id, config_hash)
        if run is None:
            return None
        dest.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(run.info.run_id, record.BEST_CHECKPOINT, str(dest)))
        except Exception:  # noqa: BLE001 - logged without a checkpoint: the caller says what is missing
            return None

    def start_child(
        self, experiment_id: str, parent_id: str | None, config: RunConfig, name: str, tags: dict[str, Any]
    ) -> str:
        """A run for `config`: the cut-off one with the same config hash if there is one, else new.

        The caller holds the Optuna trial for this config exclusively, so a run of it still marked
        RUNNING belongs to a worker that died: it is marked FAILED first, for the record.
        """
        all_tags = {
            record.ROLE: "run",
            record.CONFIG_HASH: config.hash,
            record.BUDGET: config.budget,
            record.DATASET: config.dataset,
            record.MODEL: config.model,
            "bench.host": socket.gethostname(),
            "bench.pid": os.getpid(),
            **{f"bench.{k}": v for k, v in provenance.stamp(str(resolve_device(config.device))).items()},
            **source_tags(),
            record.DESCRIPTION: child_description(config, tags),
            **{k if k.startswith(("bench.", "mlflow.")) else f"bench.{k}": v for k, v in tags.items()},
            **({record.PARENT: parent_id} if parent_id else {}),  # none: a lone bench.train run
        }
        previous = [r for r in self.child_runs(experiment_id, config_hash=config.hash) if r.info.status != "FINISHED"]
        if previous:
            run_id = previous[0].info.run_id
            if previous[0].info.status in ACTIVE:
                self.client.set_tag(run_id, "bench.recovered", "worker died while running; marked FAILED, resumed")
                self.client.set_terminated(run_id, "FAILED")
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in all_tags.items()])
            self.client.set_tag(run_id, "bench.resumed", "true")
            return run_id
        run = self.client.create_run(experiment_id, run_name=name, tags=_str_values(all_tags))
        params = [Param(k, str(v)) for k, v in sorted(config.to_dict().items())]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def set_status(self, run_id: str, status: str, **tags: Any) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, f"bench.{key}", str(value))
        if status in ACTIVE:
            self.client.update_run(run_id, status=status)
        else:
            self.client.set_terminated(run_id, status)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def run_exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
        except Exception:  # noqa: BLE001 - deleted, or the store was replaced
            return False
        return True

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def describe_parent(self, run_id: str, description: str, params: dict[str, Any]) -> None:
        """The study's text as the run's description, and the settings every child shares as params
        (logged once: MLflow params never change, and a resumed study has the same ones)."""
        self.set_tags(run_id, {record.DESCRIPTION: description})
        logged = self.client.get_run(run_id).data.params
        new = [Param(k, str(v)) for k, v in sorted(params.items()) if k not in logged]
        if new:
            self.client.log_batch(run_id, params=new)

    def finished_runs(
        self, experiment_ids: list[str], query: str = "", *, tags: dict[str, str] | None = None
    ) -> pd.DataFrame:
        """FINISHED child runs (tag bench.role = run) as a pandas frame, newest first; `tags`
        (bench.<key> -> value) are compared here, never put into a filter string."""
        where = FINISHED_CHILDREN + (f" and {query}" if query else "")
        runs = mlflow.search_runs(experiment_ids, filter_string=where, max_results=50000)
        for key, value in (tags or {}).items():
            column = f"tags.bench.{key}"
            runs = runs[runs[column] == value] if column in runs else runs.iloc[0:0]
        return runs.reset_index(drop=True)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    # --- after training: what bench.predict and bench.post read from a run and add under it ------

    def get_run(self, run_id: str):
        try:
            return self.client.get_run(run_id)
        except Exception:
            raise BenchError(
                f"no MLflow run {run_id!r} in {redact(self.uri)}: copy the run id from the MLflow UI, "
                "or give the --tracking-uri of the store that holds it"
            ) from None

    def missing_artifacts(self, run_id: str) -> str | None:
        """The folder of this machine where the run's experiment keeps its artifacts, when it does not exist:
        a store copied here from the machine its runs were made on (the device kit's output, say), its
        artifact folder left there. None when the folder is here, or the artifacts are on a server."""
        uri = urllib.parse.urlparse(self.get_run(run_id).info.artifact_uri)
        if uri.scheme not in ("", "file"):
            return None
        experiment = Path(urllib.parse.unquote(uri.path)).parents[1]  # <experiment>/<run id>/artifacts
        return None if experiment.exists() else str(experiment)

    def download_artifact(self, run_id: str, path: str, folder: str | Path) -> Path:
        """Copy the artifact `path` of a run (e.g. checkpoints/best.pt) into `folder`."""
        self.get_run(run_id)  # a wrong run id gets its own message, not "no such artifact"
        try:
            return Path(self.client.download_artifacts(run_id, path, str(folder)))
        except Exception as exc:
            raise BenchError(
                f"run {run_id} has no artifact {path} ({one_line(exc)}): only finished bench runs "
                "carry one; give --checkpoint PATH instead"
            ) from None

    def start_derived(self, source_run_id: str, name: str, params: dict[str, Any], tags: dict[str, Any]) -> str:
        """A run nested under a finished run, for numbers derived from its model (bench.post)."""
        source = self.get_run(source_run_id)
        all_tags = {
            record.ROLE: "post",  # not "run": reports of a study must not count it as a variant
            "bench.source_run": source_run_id,
            **{f"bench.{k}": v for k, v in provenance.stamp().items()},
            **{f"bench.{k}": v for k, v in tags.items()},
            **source_tags(),
            record.PARENT: source_run_id,
        }
        run = self.client.create_run(source.info.experiment_id, run_name=name, tags=_str_values(all_tags))
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
        return run.info.run_id


def tag_filter(tags: dict[str, Any]) -> str:
    """An MLflow filter for the bench.<key> tag values it can match exactly (the rest: see UNQUOTABLE)."""
    exact = [f"tags.`bench.{k}` = '{v}'" for k, v in tags.items() if not UNQUOTABLE & set(str(v))]
    return " and ".join(exact)


def source_tags() -> dict[str, str]:
    """What the UI's Source column shows: the command that made the run, and the commit it ran."""
    return {
        record.SOURCE_NAME: " ".join(["python", "-m", *_command()]),
        record.SOURCE_TYPE: "LOCAL",
        record.SOURCE_COMMIT: provenance.git_commit(),
    }


def _command() -> list[str]:
    """This process's command as a person types it: python -m bench.ablation, not its file path."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return [spec.name.removesuffix(".__main__") if spec else Path(sys.argv[0]).name]


def child_description(config: RunConfig, tags: dict[str, Any]) -> str:
    variant = tags.get("variant", config.model)
    return (
        f"{variant} (seed {config.seed}) of study `{tags.get('study', '')}`, budget `{config.budget}` on "
        f"{config.dataset}: {config.train_epochs:g} epochs. The servable model is `model`; "
        f"the best weights are {record.BEST_CHECKPOINT}."
    )


def _str_values(tags: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in tags.items()}
