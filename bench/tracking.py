"""Everything that touches MLflow: the only module that imports it.

Layout: one experiment per study; one parent run per study at one budget (its Optuna study);
one child run per grid point (variant x seed) or trial, named so a person can read it in the UI.
A child run is found again by its config hash, so a run cut off is resumed on the same MLflow
run rather than duplicated, and a finished one is never trained twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # fail in seconds, not minutes
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from mlflow.entities import Metric, Param, RunStatus, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from bench import plots, provenance  # noqa: E402
from bench.config import RunConfig  # noqa: E402
from bench.errors import BenchError, redact  # noqa: E402

# Migrations chatter at INFO; and pickling the logged model is deliberate (see log_model).
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)

DEFAULT_URI = "sqlite:///mlflow.db"
EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")
# 'seconds' per epoch is logged as epoch_seconds so it reads unambiguously next to train_seconds.
METRIC_NAMES = {"seconds": "epoch_seconds"}
ACTIVE = ("RUNNING", "SCHEDULED")


def resolve_uri(uri: str | None) -> str:
    """The tracking URI to use; a relative sqlite path made absolute, so that it names one store
    wherever the process later runs (MLflow caches stores by URI) and prints a usable UI command."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).expanduser().absolute())
    return uri


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
            raise BenchError(f"cannot use MLflow tracking store {redact(self.uri)}: {_first_line(exc)}") from None

    @property
    def ui_command(self) -> str:
        if self.uri.startswith(("http://", "https://")):
            return f"open {redact(self.uri)} in a browser"
        return f"mlflow ui --backend-store-uri {redact(self.uri)}"

    # --- experiments and runs -----------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=self._artifact_location(name))
        except Exception:  # another worker created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def _artifact_location(self, name: str) -> str | None:
        """Beside a sqlite store (its mlruns/ folder), whatever folder the command runs in."""
        if not self.uri.startswith("sqlite:///"):
            return None  # servers and other stores choose their own
        folder = Path(self.uri[len("sqlite:///"):]).expanduser().resolve().parent / "mlruns"
        return (folder / name).as_uri()

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
        self, experiment_id: str, parent_id: str, config: RunConfig, name: str, tags: dict[str, Any]
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
            "mlflow.parentRunId": parent_id,
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

    def log_result(self, run_id: str, result, title: str) -> None:
        """Final numbers, the epochs a kill kept from MLflow, plots, checkpoint and the servable model."""
        logged = self.logged_epochs(run_id)
        for stats in result.history:
            if stats.epoch not in logged:
                self.log_epoch(run_id, stats)
        self.log_metrics(run_id, {
            "test_acc": result.test_acc,
            "test_loss": result.test_loss,
            "best_val_acc": result.best_val_acc,
            "best_epoch": result.best_epoch,
            "params": result.params,
            "flops": result.flops,
            "train_seconds": result.train_seconds,
            **result.evaluations,  # top-1 / top-5 of the paper's evaluation modes, when asked for
        })
        self.client.log_batch(run_id, tags=[
            RunTag("bench.device", provenance.device_name(result.device)),
            RunTag("bench.precision", result.precision),
            *[RunTag(f"bench.data.{k}", str(v)) for k, v in result.data_info.items()],
        ])
        with tempfile.TemporaryDirectory() as tmp:
            plots.learning_curves(result.history, Path(tmp, "learning_curves.png"), title)
            plots.confusion_matrix(result.labels, result.predictions, result.classes,
                                   Path(tmp, "confusion_matrix.png"), f"{title}: test set")
            self.client.log_artifacts(run_id, tmp, "plots")
        if result.best_checkpoint:
            self.client.log_artifact(run_id, result.best_checkpoint, "checkpoints")
        self.log_model(run_id, result.model, result.input_shape)

    def log_model(self, run_id: str, model: torch.nn.Module, input_shape: tuple[int, ...]) -> None:
        """Log the model so that mlflow.pytorch.load_model and `mlflow models serve` give it back."""
        model = model.to("cpu", memory_format=torch.contiguous_format).eval()
        example = torch.zeros(1, *input_shape)
        with torch.no_grad():
            output = model(example).numpy()
        signature = mlflow.models.infer_signature(example.numpy(), output)
        with mlflow.start_run(run_id=run_id):
            mlflow.pytorch.log_model(
                model,
                name="model",
                signature=signature,
                input_example=example.numpy(),
                # Given explicitly: inferring them costs ~14 s a run.
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                  f"torchvision=={torchvision.__version__.split('+')[0]}"],
                code_paths=[str(provenance.PROJECT_ROOT / "bench")],
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
                f"run {run_id} has no artifact {path} ({_first_line(exc)}): only finished bench runs "
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
                f"cannot reach the MLflow tracking server at {redact(uri)} ({_first_line(exc)}): "
                "start it, or drop --tracking-uri/MLFLOW_TRACKING_URI to use sqlite:///mlflow.db"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).expanduser().resolve().parent
        if not folder.is_dir():
            raise BenchError(f"MLflow store {uri}: folder {folder} does not exist")


@contextlib.contextmanager
def _creation_lock(uri: str):
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri[len("sqlite:///"):]).expanduser()
    with open(path.with_name(path.name + ".init-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _device(config: RunConfig) -> str:
    from bench.train import resolve_device

    return str(resolve_device(config.device))


def _str_values(tags: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in tags.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
