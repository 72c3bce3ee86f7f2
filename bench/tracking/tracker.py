"""The Tracker: one open tracking store, with the runs, logging and models it offers."""

from __future__ import annotations

import os

import mlflow
from mlflow.tracking import MlflowClient

from bench.errors import BenchError, one_line, redact
from bench.tracking import store
from bench.tracking.logs import Logging
from bench.tracking.models import Models
from bench.tracking.runs import Runs


class Tracker(Runs, Logging, Models):
    def __init__(self, uri: str | None = None):
        store.set_defaults()
        self.uri = store.resolve_uri(uri)
        store.check_reachable(self.uri)
        inherited = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)
        # MLflow also exports the URI to the environment; child processes must choose their own.
        if inherited is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = inherited
        try:
            with store.creation_lock(self.uri):  # two workers creating one sqlite store race its migrations
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
        served = self.uri.startswith(("http://", "https://"))
        base = redact(self.uri).rstrip("/") if served else "http://127.0.0.1:5000"
        return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def open_existing(uri: str | None) -> Tracker:
    """The Tracker for an existing store; a store that is not there is an error, never created empty."""
    return Tracker(store.existing_uri(uri))
