"""Everything that touches MLflow: the only module that imports it.

Layout: one experiment per study; one parent run per study at one budget (its Optuna study);
one child run per grid point (variant x seed) or trial, named so a person can read it in the UI.
A child run is found again by its config hash, so a run cut off is resumed on the same MLflow
run rather than duplicated, and a finished one is never trained twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # fail in seconds, not minutes
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# libpq's own connect timeout, for every PostgreSQL connection MLflow and Optuna open (default: none).
os.environ.setdefault("PGCONNECT_TIMEOUT", "10")
CONNECT_TIMEOUT_S = 5  # the first connection, made here before MLflow's ten retries could start

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import ModelSignature  # noqa: E402
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE  # noqa: E402
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema, TensorSpec  # noqa: E402
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor  # noqa: E402
from mlflow.types.schema import Map  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from bench import plots, provenance, serving  # noqa: E402
from bench.config import RunConfig  # noqa: E402
from bench.device import resolve_device  # noqa: E402
from bench.errors import BenchError, one_line, redact  # noqa: E402
from bench.store_files import locked, sqlite_path  # noqa: E402

# Migrations chatter at INFO; and pickling the logged model is deliberate (see log_model).
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)

DEFAULT_URI = "sqlite:///mlflow.db"
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")
# 'seconds' per epoch is logged as epoch_seconds so it reads unambiguously next to train_seconds.
METRIC_NAMES = {"seconds": "epoch_seconds"}
ACTIVE = ("RUNNING", "SCHEDULED")
EXPERIMENT_KIND = "mlflow.experimentKind"  # read by the UI (MLflow 3) to choose the experiment's view
DESCRIPTION = "mlflow.note.content"  # a run's description in the UI
BEST_ALIAS = "best"
SYSTEM_METRICS_INTERVAL_S = 5.0
# A run's split as a one-row table (log_dataset). Its schema is given: inferred, MLflow warns on every
# run that integer columns cannot hold missing values, which matters for model inputs, not this record.
SPLIT_SCHEMA = Schema([ColSpec("long", "n_train"), ColSpec("long", "n_val"), ColSpec("long", "n_test"),
                       ColSpec("long", "split_seed"), ColSpec("long", "subset", required=False),
                       ColSpec("long", "image_size"), ColSpec("string", "split_hash")])


def resolve_uri(uri: str | None) -> str:
    """The tracking URI to use; a relative sqlite path made absolute, so that it names one store
    wherever the process later runs (MLflow caches stores by URI) and prints a usable UI command."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    path = sqlite_path(uri)
    return uri if path is None else "sqlite:///" + str(path.absolute())


class Tracker:
    def __init__(self, uri: str | None = None):
        self.uri = resolve_uri(uri)
        check_reachable(self.uri)
        inherited = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)
        # MLflow also exports the URI to the environment; child processes must choose their own.
        if inherited is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = inherited
        try:
            with _creation_lock(self.uri):  # two workers creating one sqlite store race its migrations
                self.client = MlflowClient(self.uri)
                self.client.search_experiments(max_results=1)
        except Exception as exc:
            raise BenchError(f"cannot use MLflow tracking store {redact(self.uri)}: {one_line(exc)}") from None

    @property
    def ui_command(self) -> str:
        if self.uri.startswith(("http://", "https://")):
            return f"open {redact(self.uri)} in a browser"
        return f"mlflow ui --backend-store-uri {redact(self.uri)}"

    def runs_page(self, experiment_id: str) -> str:
        """The experiment's runs in the UI, on its model-training view (MLflow 3 opens on GenAI)."""
        base = redact(self.uri).rstrip("/") if self.uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"

    # --- experiments and runs -----------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            # Marked as model training, so the UI opens on runs, not on its GenAI (traces) view.
            return self.client.create_experiment(name, artifact_location=self._artifact_location(name),
                                                 tags={EXPERIMENT_KIND: "custom_model_development"})
        except Exception:  # another worker created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def find_experiment(self, name: str) -> str | None:
        experiment = self.client.get_experiment_by_name(name)
        return None if experiment is None else experiment.experiment_id

    def _artifact_location(self, name: str) -> str | None:
        """Beside a sqlite store (its mlruns/ folder), whatever folder the command runs in."""
        path = sqlite_path(self.uri)
        if path is None:
            return None  # servers and other stores choose their own
        return (path.resolve().parent / "mlruns" / name).as_uri()

    def create_parent(self, experiment_id: str, name: str, tags: dict[str, Any]) -> str:
        run = self.client.create_run(
            experiment_id, run_name=name, tags={"bench.role": "study", **_str_values(tags)}
        )
        return run.info.run_id

    def child_runs(self, experiment_id: str, **tags: str) -> list:
        query = " and ".join(f"tags.`bench.{k}` = '{v}'" for k, v in tags.items())
        return self.client.search_runs(
            [experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=5000
        )

    def finished_hashes(self, experiment_id: str) -> set[str]:
        """The config hashes of every finished child run of an experiment."""
        runs = self.client.search_runs([experiment_id], "tags.`bench.role` = 'run' and attributes.status = 'FINISHED'",
                                       max_results=50000)
        return {r.data.tags.get("bench.config_hash") for r in runs}

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
            return Path(self.client.download_artifacts(run.info.run_id, "checkpoints/best.pt", str(dest)))
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
            "bench.role": "run",
            "bench.config_hash": config.hash,
            "bench.budget": config.budget,
            "bench.dataset": config.dataset,
            "bench.model": config.model,
            "bench.host": socket.gethostname(),
            "bench.pid": os.getpid(),
            **{f"bench.{k}": v for k, v in provenance.stamp(_device(config)).items()},
            **{k if k.startswith(("bench.", "mlflow.")) else f"bench.{k}": v for k, v in tags.items()},
            **({"mlflow.parentRunId": parent_id} if parent_id else {}),  # none: a lone bench.train run
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
        self.set_tags(run_id, {DESCRIPTION: description})
        logged = self.client.get_run(run_id).data.params
        new = [Param(k, str(v)) for k, v in sorted(params.items()) if k not in logged]
        if new:
            self.client.log_batch(run_id, params=new)

    def finished_runs(self, experiment_ids: list[str], query: str = ""):
        """FINISHED child runs (tag bench.role = run) as a pandas frame, newest first."""
        where = "tags.`bench.role` = 'run' and attributes.status = 'FINISHED'" + (f" and {query}" if query else "")
        return mlflow.search_runs(experiment_ids, filter_string=where, max_results=50000)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    def log_variant_summary(self, parent_id: str, experiment_id: str, budget: str, step: int) -> dict[str, dict]:
        """Mean and std of test accuracy and the count of runs per variant, on the parent run;
        stepped by the number of finished runs, so the UI shows them grow as children finish."""
        runs = self.finished_runs([experiment_id], f"tags.`bench.budget` = '{budget}'")
        if runs.empty or "tags.bench.variant" not in runs:
            return {}
        runs = runs.drop_duplicates("tags.bench.config_hash")
        summary = {}
        for variant, group in runs.groupby("tags.bench.variant"):
            acc = group["metrics.test_acc"].dropna()
            summary[variant] = {"test_acc_mean": float(acc.mean()), "test_acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                                "n": len(acc)}
        self.log_metrics(parent_id, {f"{key}.{variant}": value for variant, values in summary.items()
                                     for key, value in values.items()}, step=step)
        return summary

    def log_artifacts(self, run_id: str, paths: list[str | Path], folder: str) -> None:
        for path in paths:
            self.client.log_artifact(run_id, str(path), folder)

    # --- the Model Registry ------------------------------------------------------------------------

    def register_best(self, name: str, run_id: str) -> int:
        """Register `run_id`'s pyfunc model as `name` with the alias `best`; a new version only when
        the best run changed. Returns the version the alias points at."""
        name = registry_name(name)
        try:
            try:
                current = self.client.get_model_version_by_alias(name, BEST_ALIAS)
            except MlflowException:
                current = None
            if current is not None and current.run_id == run_id:
                return int(current.version)
            with contextlib.redirect_stdout(sys.stderr):  # MLflow prints "Created version ..." on stdout
                version = mlflow.register_model(self._logged_model_uri(run_id, "model"), name).version
            self.client.set_registered_model_alias(name, BEST_ALIAS, version)
        except MlflowException as exc:
            raise BenchError(f"cannot register the best model as {name!r} in {redact(self.uri)}: "
                             f"{one_line(exc)}") from None
        return int(version)

    def _logged_model_uri(self, run_id: str, name: str) -> str:
        """models:/<id> of the model `run_id` logged as `name`: registering that, not runs:/<id>/<name>,
        spares MLflow 3's warning that the run has no artifacts at that path (it keeps models apart)."""
        run = self.client.get_run(run_id)
        found = self.client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'")
        return f"models:/{found[0].model_id}" if found else f"runs:/{run_id}/{name}"

    def resolve_model(self, uri: str) -> str:
        """The run id behind models:/NAME@ALIAS or models:/NAME/VERSION, or one line saying why not."""
        if not uri.startswith("models:/"):
            raise BenchError(f"--model takes models:/NAME@ALIAS or models:/NAME/VERSION, got {uri!r}")
        rest = uri[len("models:/"):]
        name, alias = rest.split("@", 1) if "@" in rest else (rest.rsplit("/", 1) + [""])[:2]
        try:
            if "@" in rest:
                version = self.client.get_model_version_by_alias(name, alias)
            elif alias.isdigit():
                version = self.client.get_model_version(name, alias)
            else:
                raise BenchError(f"{uri}: say which version, models:/{rest}@best or models:/{rest}/1")
        except MlflowException as exc:
            known = self._registered_names()
            hint = f"registered models: {', '.join(known)}" if known else "no model is registered there yet"
            raise BenchError(f"no model {uri} in {redact(self.uri)} ({one_line(exc)}); {hint}") from None
        return version.run_id

    def _registered_names(self) -> list[str]:
        try:
            return sorted(m.name for m in self.client.search_registered_models(max_results=50))
        except MlflowException:
            return []

    # --- datasets and system metrics ---------------------------------------------------------------

    def log_dataset(self, run_id: str, info: dict[str, Any]) -> None:
        """The run's data as an MLflow dataset input (the runs table's Dataset column): its name,
        a digest of the recorded split, where it came from, and its sizes."""
        frame = pd.DataFrame([{name: info.get(name) for name in SPLIT_SCHEMA.input_names()}])
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local path, as meant
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=str(info.get("source", "unknown")),
                                              name=str(info.get("dataset")), digest=str(info.get("split_hash"))[:36])
        dataset.schema = SPLIT_SCHEMA  # a cached property: set, it is never inferred
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[
            InputTag(MLFLOW_DATASET_CONTEXT, "train")])])

    @contextlib.contextmanager
    def system_metrics(self, run_id: str, enabled: bool = True):
        """MLflow's own CPU, memory, disk, network (and GPU) sampler on a run while the block runs.

        Runs here are made by the client, not by mlflow.start_run, so the monitor is started by
        hand, as start_run(log_system_metrics=True) would."""
        if not enabled:
            yield
            return
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                       resume_logging=True, tracking_uri=self.uri)
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()

    # --- metrics and artifacts ------------------------------------------------------------------

    def log_epoch(self, run_id: str, stats) -> None:
        now = int(time.time() * 1000)
        values = vars(stats)
        metrics = [
            Metric(METRIC_NAMES.get(k, k), float(values[k]), now, stats.epoch) for k in EPOCH_METRICS
        ]
        self.client.log_batch(run_id, metrics=metrics)

    def log_metrics(self, run_id: str, values: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def logged_epochs(self, run_id: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, "val_acc")}

    def log_result(self, run_id: str, config: RunConfig, result, title: str) -> None:
        """Final numbers, the epochs a kill kept from MLflow, plots, checkpoint and the servable model."""
        logged = self.logged_epochs(run_id)
        for stats in result.history:
            if stats.epoch not in logged:
                self.log_epoch(run_id, stats)
        final = {
            "test_acc": result.test_acc,
            "test_loss": result.test_loss,
            "best_val_acc": result.best_val_acc,
            "best_epoch": result.best_epoch,
            "params": result.params,
            "flops": result.flops,
            "train_seconds": result.train_seconds,
            **result.evaluations,  # top-1 / top-5 of the paper's evaluation modes, when asked for
        }
        kept = self.client.get_run(run_id).data.metrics  # by an attempt killed after logging them
        self.log_metrics(run_id, {k: v for k, v in final.items() if k not in kept})
        self.client.log_batch(run_id, tags=[
            RunTag("bench.device", provenance.device_name(result.device)),
            RunTag("bench.precision", result.precision),
            *[RunTag(f"bench.data.{k}", str(v)) for k, v in result.data_info.items()],
        ])
        self.log_dataset(run_id, result.data_info)
        with tempfile.TemporaryDirectory() as tmp:
            plots.learning_curves(result.history, Path(tmp, "learning_curves.png"), title)
            plots.confusion_matrix(result.labels, result.predictions, result.classes,
                                   Path(tmp, "confusion_matrix.png"), f"{title}: test set")
            self.client.log_artifacts(run_id, tmp, "plots")
        if result.best_checkpoint:
            self.client.log_artifact(run_id, result.best_checkpoint, "checkpoints")
        self.log_model(run_id, config, result)

    def log_model(self, run_id: str, config: RunConfig, result) -> None:
        """Two models: `model`, the pyfunc that takes images as a person has them (preprocessing
        inside, see bench.serving) and answers with class names; `module`, the bare network for
        mlflow.pytorch.load_model (normalised float input at the model's size, logits out)."""
        preprocessing = result.preprocessing
        servable = serving.Servable(result.model, preprocessing)
        examples = serving.native_examples(result.examples, preprocessing)
        requirements = [f"torch=={torch.__version__.split('+')[0]}",  # given: inferring costs ~14 s a run
                        f"torchvision=={torchvision.__version__.split('+')[0]}", f"pandas=={pd.__version__}"]
        code = [str(provenance.PROJECT_ROOT / "bench")]
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
            folder = serving.save(Path(tmp, "servable"), servable.model, preprocessing, config)
            mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(serving.__file__).with_name("served_model.py")),
                artifacts={"servable": str(folder)},
                signature=ModelSignature(
                    inputs=Schema([TensorSpec(np.dtype(object), (-1,))]),
                    outputs=Schema([ColSpec("string", "class"), ColSpec("long", "class_index"),
                                    ColSpec("double", "confidence"), ColSpec("boolean", "inverted"),
                                    ColSpec(Map(DataType.double), "probabilities")]),
                    params=ParamSchema([ParamSpec("invert", "string", "auto")]),
                ),
                input_example=examples,
                metadata={
                    "input": serving.describe_input(preprocessing),
                    "classes": list(preprocessing.classes),
                    "output": "per image: class, class_index, confidence, inverted, probabilities (class -> p)",
                    "bare_network": "runs:/<run id>/module (mlflow.pytorch; normalised input, logits out)",
                },
                pip_requirements=requirements,
                code_paths=code,
            )
            network = servable.model
            example = torch.as_tensor(preprocessing.normalise(result.examples[:1]))
            with torch.no_grad():
                logits = network(example).numpy()
            mlflow.pytorch.log_model(
                network,
                name="module",
                signature=mlflow.models.infer_signature(example.numpy(), logits),
                input_example=example.numpy(),
                pip_requirements=requirements,
                code_paths=code,
                serialization_format="pickle",  # loads anywhere torch and bench import; no export tracing
            )
        self.client.update_run(run_id, status="RUNNING")  # the fluent end_run marked it FINISHED

    # --- after training: what bench.predict and bench.post read from a run and add under it ------

    def get_run(self, run_id: str):
        try:
            return self.client.get_run(run_id)
        except Exception:
            raise BenchError(
                f"no MLflow run {run_id!r} in {redact(self.uri)}: copy the run id from the MLflow UI, "
                "or give the --tracking-uri of the store that holds it"
            ) from None

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
            "bench.role": "post",  # not "run": reports of a study must not count it as a variant
            "bench.source_run": source_run_id,
            **{f"bench.{k}": v for k, v in provenance.stamp().items()},
            **{f"bench.{k}": v for k, v in tags.items()},
            "mlflow.parentRunId": source_run_id,
        }
        run = self.client.create_run(source.info.experiment_id, run_name=name, tags=_str_values(all_tags))
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
        return run.info.run_id

    def log_file(self, run_id: str, path: str | Path, folder: str) -> None:
        self.client.log_artifact(run_id, str(path), folder)


class RefusedInput(MlflowException):
    """A served request refused in one line (HTTP 400). MLflow's scoring server rewrites the message
    of every MlflowException to "Failed to predict data '<the whole input>'. Error: ...": this one
    keeps its first message, so a refusal never echoes the input back."""

    @property
    def message(self) -> str:
        return self._first_message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_first_message"):
            self._first_message = value


class ServedModel(mlflow.pyfunc.PythonModel):
    """The pyfunc face of a bench.serving.Servable: what `mlflow models serve` and
    mlflow.pyfunc.load_model run. Param `invert`: auto (default), yes or no."""

    # The signature is given explicitly (the input takes several layouts, see bench.serving), not
    # inferred from type hints; this tells MLflow not to ask for them.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.servable = serving.load(context.artifacts["servable"])

    def predict(self, context, model_input, params=None):
        try:
            return self.servable.predict(model_input, invert=(params or {}).get("invert", "auto"))
        except BenchError as exc:  # a 400 with our one line, not a server error
            raise RefusedInput(str(exc), INVALID_PARAMETER_VALUE) from None


def open_existing(uri: str | None) -> Tracker:
    """The Tracker for an existing store; a store that is not there is an error, never created empty."""
    uri = resolve_uri(uri)
    path = _local_store_path(uri)
    if path is not None and not path.exists():
        raise BenchError(
            f"MLflow store {redact(uri)} does not exist ({path.absolute()} not found): run the command where the "
            "study ran, or pass --tracking-uri (or $MLFLOW_TRACKING_URI) naming the store it wrote to"
        )
    if "://" not in uri and path is not None and path.is_file():
        uri = f"sqlite:///{path.resolve()}"  # a bare path to a database file means that sqlite store
    return Tracker(uri)


def _local_store_path(uri: str) -> Path | None:
    """The file or folder a local tracking URI names; None for servers and in-memory stores."""
    bare = uri.split("?", 1)[0]
    if bare in ("sqlite:///", "sqlite:///:memory:", "file://", "file://:memory:"):
        return None
    if bare.startswith("file://"):
        return Path(bare[len("file://"):]).expanduser()
    if (path := sqlite_path(bare)) is not None:
        return path
    return None if re.match(r"^[a-z][a-z0-9+.-]*:", uri) else Path(uri).expanduser()


def registry_name(name: str) -> str:
    """A registered model's name: MLflow refuses '/', ':' and '%' (a budget label may hold a path)."""
    return re.sub(r"[/:%]", "_", name)


def serve_from_code() -> None:
    """Called by bench/served_model.py when MLflow loads the pyfunc model."""
    mlflow.models.set_model(ServedModel())


def check_reachable(uri: str) -> None:
    """Fail in one line, before anything runs, if the tracking store cannot be used."""
    if uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(uri)
        bare = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
        try:  # urllib takes user:password@ for part of the host name: strip it, the probe needs none
            with urllib.request.urlopen(urllib.parse.urlunsplit(bare).rstrip("/") + "/health", timeout=5) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise BenchError(
                f"cannot reach the MLflow tracking server at {redact(uri)} ({one_line(exc)}): "
                "start it, or drop --tracking-uri/MLFLOW_TRACKING_URI to use sqlite:///mlflow.db"
            ) from None
    elif (path := sqlite_path(uri)) is not None:
        folder = path.resolve().parent
        if not folder.is_dir():
            raise BenchError(f"MLflow store {uri}: folder {folder} does not exist")
    elif uri.startswith(("postgresql", "mysql", "mssql")):
        _check_database(uri)


def _check_database(uri: str) -> None:
    """Connect once with a short timeout: MLflow retries a failed database ten times over ~2 minutes,
    with a warning each time, before it gives up."""
    import sqlalchemy

    timeout = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=timeout if uri.startswith(("postgresql", "mysql")) else {})
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except ImportError as exc:
        raise BenchError(f"MLflow store {redact(uri)} needs a driver that is not installed ({exc.name}): "
                         "pip install 'vgg-bench[postgres]'") from None
    except Exception as exc:
        raise BenchError(f"cannot connect to the MLflow tracking database {redact(uri)} "
                         f"({redact(one_line(exc))}): check the URL, or create the database first") from None


def _creation_lock(uri: str):
    """A sqlite store's setup lock, beside its file; other stores need none."""
    path = sqlite_path(uri)
    return contextlib.nullcontext() if path is None else locked(path.with_name(path.name + ".init-lock"))


def _device(config: RunConfig) -> str:
    return str(resolve_device(config.device))


def _str_values(tags: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in tags.items()}

