"""The tracking store: its URI, whether it can be reached, its creation lock, and the defaults
MLflow runs under here (set when a Tracker opens a store, never at import)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from bench.errors import BenchError, one_line, redact
from bench.store_files import locked, sqlite_path

DEFAULT_URI = "sqlite:///mlflow.db"
CONNECT_TIMEOUT_S = 5  # the first connection, made here before MLflow's ten retries could start
ENVIRONMENT = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # fail in seconds, not minutes
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # libpq's own connect timeout, for every PostgreSQL connection MLflow and Optuna open (default: none).
    "PGCONNECT_TIMEOUT": "10",
}


def set_defaults() -> None:
    """MLflow's settings for this process, where the user set none (MLflow reads them when used)."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # Migrations chatter at INFO; and pickling the logged model is deliberate (see models.log_model).
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)


def resolve_uri(uri: str | None) -> str:
    """The tracking URI to use; a relative sqlite path made absolute, so that it names one store
    wherever the process later runs (MLflow caches stores by URI) and prints a usable UI command."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    path = sqlite_path(uri)
    return uri if path is None else "sqlite:///" + str(path.absolute())


def existing_uri(uri: str | None) -> str:
    """The URI of an existing store; a store that is not there is an error, never created empty."""
    uri = resolve_uri(uri)
    path = local_store_path(uri)
    if path is not None and not path.exists():
        raise BenchError(
            f"MLflow store {redact(uri)} does not exist ({path.absolute()} not found): run the "
            "command where the study ran, or pass --tracking-uri (or $MLFLOW_TRACKING_URI) naming the store "
            "it wrote to"
        )
    if "://" not in uri and path is not None and path.is_file():
        uri = f"sqlite:///{path.resolve()}"  # a bare path to a database file means that sqlite store
    return uri


def local_store_path(uri: str) -> Path | None:
    """The file or folder a local tracking URI names; None for servers and in-memory stores."""
    bare = uri.split("?", 1)[0]
    if bare in ("sqlite:///", "sqlite:///:memory:", "file://", "file://:memory:"):
        return None
    if bare.startswith("file://"):
        return Path(bare[len("file://") :]).expanduser()
    if (path := sqlite_path(bare)) is not None:
        return path
    return None if re.match(r"^[a-z][a-z0-9+.-]*:", uri) else Path(uri).expanduser()


def artifact_location(uri: str, experiment: str) -> str | None:
    """Beside a sqlite store (its mlruns/ folder), whatever folder the command runs in."""
    path = sqlite_path(uri)
    if path is None:
        return None  # servers and other stores choose their own
    return (path.resolve().parent / "mlruns" / experiment).as_uri()


def check_reachable(uri: str) -> None:
    """Fail in one line, before anything runs, if the tracking store cannot be used."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif (path := sqlite_path(uri)) is not None:
        folder = path.resolve().parent
        if not folder.is_dir():
            raise BenchError(f"MLflow store {uri}: folder {folder} does not exist")
    elif uri.startswith(("postgresql", "mysql", "mssql")):
        _check_database(uri)


def _check_server(uri: str) -> None:
    parts = urllib.parse.urlsplit(uri)
    bare = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    health = urllib.parse.urlunsplit(bare).rstrip("/") + "/health"
    try:  # urllib takes user:password@ for part of the host name: strip it, the probe needs none
        with urllib.request.urlopen(health, timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(
            f"cannot reach the MLflow tracking server at {redact(uri)} ({one_line(exc)}): "
            "start it, or drop --tracking-uri/MLFLOW_TRACKING_URI to use sqlite:///mlflow.db"
        ) from None


def _check_database(uri: str) -> None:
    """Connect once with a short timeout: MLflow retries a failed database ten times over ~2 minutes,
    with a warning each time, before it gives up."""
    import sqlalchemy

    timeout = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        options = timeout if uri.startswith(("postgresql", "mysql")) else {}
        engine = sqlalchemy.create_engine(uri, connect_args=options)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except ImportError as exc:
        raise BenchError(
            f"MLflow store {redact(uri)} needs a driver that is not installed ({exc.name}): "
            "pip install 'vgg-bench[postgres]'"
        ) from None
    except Exception as exc:
        raise BenchError(
            f"cannot connect to the MLflow tracking database {redact(uri)} "
            f"({redact(one_line(exc))}): check the URL, or create the database first"
        ) from None


def creation_lock(uri: str):
    """A sqlite store's setup lock, beside its file; other stores need none."""
    path = sqlite_path(uri)
    return contextlib.nullcontext() if path is None else locked(path.with_name(path.name + ".init-lock"))
