"""Everything that touches MLflow: the only package that imports it.

Layout: one experiment per study; one parent run per study at one budget (its Optuna study);
one child run per grid point (variant x seed) or trial, named so a person can read it in the UI.
A child run is found again by its config hash, so a run cut off is resumed on the same MLflow
run rather than duplicated, and a finished one is never trained twice.

Modules: store (URIs, reachability, the creation lock, MLflow's defaults), runs (experiments,
parent and child, resume, status), logs (epochs, results, datasets, system metrics), models
(the logged models and the registry), tracker (the Tracker that joins them). What the runs hold is
named in bench.engine.record.
"""

from bench.engine import record
from bench.tracking.models import ServedModel, registry_name, serve_from_code
from bench.tracking.store import DEFAULT_URI, check_reachable, resolve_uri
from bench.tracking.tracker import Tracker, open_existing

# Per-epoch metrics by EpochStats field, and the MLflow names that differ from the field's.
EPOCH_METRICS = tuple(record.epoch_metrics())
METRIC_NAMES = {k: v for k, v in record.epoch_metrics().items() if k != v}
BEST_ALIAS = record.BEST_ALIAS

__all__ = [
    "BEST_ALIAS",
    "DEFAULT_URI",
    "EPOCH_METRICS",
    "METRIC_NAMES",
    "ServedModel",
    "Tracker",
    "check_reachable",
    "open_existing",
    "registry_name",
    "resolve_uri",
    "serve_from_code",
]
