"""A run's models and the Model Registry: the servable pyfunc (preprocessing inside, see
bench.engine.serving) and the bare network, the `best` alias, and models:/ URIs resolved to runs."""

from __future__ import annotations

import contextlib
import re
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
import torchvision
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema, TensorSpec
from mlflow.types.schema import Map

from bench import provenance
from bench.config import RunConfig
from bench.engine import record, serving
from bench.errors import BenchError, one_line, redact

SERVABLE_OUTPUT = Schema(
    [
        ColSpec("string", "class"),
        ColSpec("long", "class_index"),
        ColSpec("double", "confidence"),
        ColSpec("boolean", "inverted"),
        ColSpec(Map(DataType.double), "probabilities"),
    ]
)


# The served model's one input, named: MLflow's scoring server reads an unnamed input's empty list
# (`{"inputs": []}`) as a list of records and refuses it in its signature's words before the model sees it;
# a named one reaches the model, which answers in the user's ("no images ... send at least one").
SERVED_INPUT = "images"


class Models:
    client: MlflowClient
    uri: str

    def log_model(self, run_id: str, config: RunConfig, result) -> None:
        """Two models: `model`, the pyfunc that takes images as a person has them (preprocessing
        inside, see bench.engine.serving) and answers with class names; `module`, the bare network for
        mlflow.pytorch.load_model (normalised float input at the model's size, logits out).
        `module` is logged first: the UI's Models column names the latest, and people serve `model`."""
        preprocessing = result.preprocessing
        servable = serving.Servable(result.model, preprocessing)
        requirements = [
            f"torch=={torch.__version__.split('+')[0]}",  # given: inferring costs ~14 s a run
            f"torchvision=={torchvision.__version__.split('+')[0]}",
            f"pandas=={pd.__version__}",
        ]
        code = [str(provenance.PROJECT_ROOT / "bench")]
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
            example = torch.as_tensor(preprocessing.normalise(result.examples[:1]))
            with torch.no_grad():
                logits = servable.model(example).numpy()
            mlflow.pytorch.log_model(
                servable.model,
                name=record.NETWORK,
                signature=mlflow.models.infer_signature(example.numpy(), logits),
                input_example=example.numpy(),
                pip_requirements=requirements,
                code_paths=code,
                serialization_format="pickle",  # loads anywhere torch and bench import; no export tracing
            )
            folder = serving.save(Path(tmp, "servable"), servable.model, preprocessing, config)
            mlflow.pyfunc.log_model(
                name=record.SERVABLE,
                python_model=str(Path(__file__).with_name("served_model.py")),
                artifacts={"servable": str(folder)},
                signature=ModelSignature(
                    inputs=Schema([TensorSpec(np.dtype(object), (-1,), name=SERVED_INPUT)]),
                    outputs=SERVABLE_OUTPUT,
                    params=ParamSchema([ParamSpec("invert", "string", "auto")]),
                ),
                input_example=serving.native_examples(result.examples, preprocessing),
                metadata={
                    "input": serving.describe_input(preprocessing),
                    "classes": list(preprocessing.classes),
                    "output": "per image: class, class_index, confidence, inverted, probabilities (class -> p)",
                    "bare_network": "runs:/<run id>/module (mlflow.pytorch; normalised input, logits out)",
                },
                pip_requirements=requirements,
                code_paths=code,
            )
        self.client.update_run(run_id, status="RUNNING")  # the fluent end_run marked it FINISHED

    def register_best(self, name: str, run_id: str) -> int:
        """Register `run_id`'s pyfunc model as `name` with the alias `best`; a new version only when
        the best run changed. Returns the version the alias points at."""
        name = registry_name(name)
        try:
            try:
                current = self.client.get_model_version_by_alias(name, record.BEST_ALIAS)
            except MlflowException:
                current = None
            if current is not None and current.run_id == run_id:
                return int(current.version)
            with contextlib.redirect_stdout(sys.stderr):  # MLflow prints "Created version ..." on stdout
                version = mlflow.register_model(self._logged_model_uri(run_id, record.SERVABLE), name).version
            self.client.set_registered_model_alias(name, record.BEST_ALIAS, version)
            self._describe_registered(name, version, run_id)
        except MlflowException as exc:
            raise BenchError(
                f"cannot register the best model as {name!r} in {redact(self.uri)}: {one_line(exc)}"
            ) from None
        return int(version)

    def _describe_registered(self, name: str, version: str, run_id: str) -> None:
        """Descriptions the registry's pages show: what the model is, and where this version came from."""
        self.client.update_registered_model(
            name,
            description=f"The best run of study-budget `{name}` by validation accuracy, as a servable "
            "model: raw images in (HxW, HxWxC or a batch), class names and probabilities "
            f"out. Alias `{record.BEST_ALIAS}` points at the current best.",
        )
        run = self.client.get_run(run_id)
        final = {
            name: run.data.metrics.get(record.final_metrics()[name], float("nan"))
            for name in ("best_val_acc", "test_acc")
        }
        self.client.update_model_version(
            name,
            version,
            description=f"Run {run.info.run_name} ({run_id}): best validation accuracy "
            f"{final['best_val_acc']:.4f}, test accuracy {final['test_acc']:.4f}.",
        )

    def _logged_model_uri(self, run_id: str, name: str) -> str:
        """models:/<id> of the model `run_id` logged as `name`: registering that, not runs:/<id>/<name>,
        spares MLflow 3's warning that the run has no artifacts at that path (it keeps models apart)."""
        run = self.client.get_run(run_id)
        found = self.client.search_logged_models(  # a run id and our own name: no user text
            experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
        )
        return f"models:/{found[0].model_id}" if found else f"runs:/{run_id}/{name}"

    def resolve_model(self, uri: str) -> str:
        """The run id behind models:/NAME@ALIAS or models:/NAME/VERSION, or one line saying why not."""
        if not uri.startswith("models:/"):
            raise BenchError(f"--model takes models:/NAME@ALIAS or models:/NAME/VERSION, got {uri!r}")
        rest = uri[len("models:/") :]
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
    """The pyfunc face of a bench.engine.serving.Servable: what `mlflow models serve` and
    mlflow.pyfunc.load_model run. Param `invert`: auto (default), yes or no."""

    # The signature is given explicitly (the input takes several layouts, see bench.data.preprocessing), not
    # inferred from type hints; this tells MLflow not to ask for them.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.servable = serving.load(context.artifacts["servable"])

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, dict):  # MLflow hands a named input over as {name: array}
            model_input = model_input[SERVED_INPUT]
        try:
            return self.servable.predict(model_input, invert=(params or {}).get("invert", "auto"))
        except BenchError as exc:  # a 400 with our one line, not a server error
            raise RefusedInput(str(exc), INVALID_PARAMETER_VALUE) from None


def registry_name(name: str) -> str:
    """A registered model's name: MLflow refuses '/', ':' and '%' (a budget label may hold a path)."""
    return re.sub(r"[/:%]", "_", name)


def serve_from_code() -> None:
    """Called by bench/tracking/served_model.py when MLflow loads the pyfunc model."""
    mlflow.models.set_model(ServedModel())
