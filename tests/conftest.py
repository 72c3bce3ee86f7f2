"""Shared fixtures: fresh PostgreSQL databases on the server that $BENCH_TEST_POSTGRES_URL names,
and a small real study on Fashion-MNIST whose records several test files read. Shared checks
(`from conftest import ...`): a refused command's one error line, a study's runs in an MLflow
store, waiting for a run's epochs or a server's answer."""

from __future__ import annotations

import gzip
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from sqlalchemy.engine import make_url

from bench.data.generate import make_tree
from bench.errors import cli

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")


@pytest.fixture(autouse=True)
def _own_tracking_uri():
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI: without this, a test that sets it
    would send every later test's commands (subprocesses inherit the environment) to its store."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


# --- bad input: one line, exit 2 ------------------------------------------------------------------


def error_line(returncode: int | None, stderr: str) -> str:
    """A refused command: exit 2 and a single 'error: ...' line on stderr, no traceback; that line."""
    lines = stderr.strip().splitlines()
    assert returncode == 2, (returncode, stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def command_error(*argv: str, **options) -> str:
    """`python -m *argv` refused (see error_line); `options` go to subprocess.run (cwd, env, timeout)."""
    # Without the store that mlflow.set_tracking_uri exported in this process, unless env says otherwise.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, **{"env": env, "timeout": 120, **options}
    )
    return error_line(done.returncode, done.stderr)


def main_error(main: Callable, argv: list[str], capsys) -> str:
    """A command's main refused in this process, run as `python -m` runs it (through cli)."""
    previous = signal.getsignal(signal.SIGTERM)  # cli() installs its own SIGTERM handler
    try:
        with pytest.raises(SystemExit) as exit_:
            cli(main, argv)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return error_line(exit_.value.code, capsys.readouterr().err)


# --- what a study leaves in MLflow, and waiting for it -----------------------------------------------


def study_runs(client: MlflowClient, experiment: str, role: str = "run", where: str = "") -> list:
    """A study's runs in its experiment: role 'run' for its child runs, 'study' for its parent run;
    `where` adds to the filter. None before the experiment exists."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = f"tags.`bench.role` = '{role}'" + (f" and {where}" if where else "")
    return client.search_runs([found.experiment_id], query, max_results=1000)


def study_records(client: MlflowClient, experiment: str, folder: Path, artifacts: tuple[str, ...]) -> list[str]:
    """The texts a study left in MLflow: every run's tags and params, and its artifacts named in
    `artifacts` (downloaded under `folder`), for tests that look for what must never be written."""
    records = []
    for run in study_runs(client, experiment) + study_runs(client, experiment, "study"):
        records += [str(run.data.tags), str(run.data.params)]
        into = folder / run.info.run_id
        into.mkdir(parents=True)
        for entry in client.list_artifacts(run.info.run_id):
            if entry.path in artifacts:
                client.download_artifacts(run.info.run_id, entry.path, str(into))
        records += [p.read_bytes().decode("latin-1") for p in into.rglob("*") if p.is_file()]
    return records


def journal_trials(folder: Path, name: str = "depth-smoke") -> list:
    """The trials of an Optuna study in a command's default journal (.bench/optuna.journal) under `folder`."""
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / ".bench" / "optuna.journal"))
    )
    return optuna.load_study(study_name=name, storage=storage).trials


def said(process: subprocess.Popen) -> str:
    """The last of what a process wrote to its pipe (stderr, or stdout when stderr goes there)."""
    stream = process.stderr or process.stdout
    return stream.read()[-3000:] if stream else ""


def wait_for_epochs(
    client: MlflowClient,
    experiment: str,
    epochs: int,
    workers: list[subprocess.Popen],
    timeout: float,
    pids: set[int] | None = None,
    output: Callable = said,
):
    """The first child run in training with `epochs` epochs logged (by a worker in `pids`, when given).
    Every worker must still run meanwhile: `output(worker)` tells what the one that stopped said."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.poll() is None, f"a worker stopped early:\n{output(worker)}"
        for run in study_runs(client, experiment):
            by_one_of = pids is None or int(run.data.tags.get("bench.pid", -1)) in pids
            if (
                run.info.status == "RUNNING"
                and by_one_of
                and len(client.get_metric_history(run.info.run_id, "val_acc")) >= epochs
            ):
                return run
        time.sleep(0.3)
    raise AssertionError(f"no run reached epoch {epochs} in {timeout} s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen | None = None, timeout: float = 120, output: Callable = said) -> None:
    """Until `url` answers; `process` (the server) must not exit meanwhile: `output(process)` tells why it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {output(process)}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@contextmanager
def server(argv: list[str], ready_url: str, cwd: Path, env: dict[str, str] | None = None):
    """`python -m *argv`, a server in a session of its own, from when `ready_url` answers to the block's end."""
    # The venv's bin first on PATH, as in an active venv: mlflow starts its uvicorn by name.
    env = {**(env or os.environ), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(
        [sys.executable, "-m", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(ready_url, process)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def isolated_cache(monkeypatch, tmp_path):
    """$BENCH_CACHE in the test's own folder: generated trees never land in, or come from, the user's cache."""
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "bench-cache"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A small generated ImageNet-layout tree of JPEGs: 90 images of 3 classes, 60x48 (varied)."""
    return make_tree(tmp_path_factory.mktemp("tree"), images=90, classes=3, size=(60, 48), workers=1)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The test's own working folder: a command's default store (mlflow.db, .bench/) lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def stop_after(epoch: int):
    """An on_epoch callback that interrupts a run as Ctrl-C would, once `epoch` is done."""

    def on_epoch(stats) -> None:
        if stats.epoch == epoch:
            raise KeyboardInterrupt

    return on_epoch


class Postgres:
    """Creates databases and roles for a test session, and drops them all at its end."""

    def __init__(self, url: str):
        import psycopg2

        self.url = make_url(url)
        admin = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.connection = psycopg2.connect(admin)
        self.connection.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
        self.databases: list[str] = []
        self.roles: list[str] = []

    def database(self, owner: str | None = None) -> str:
        """A new empty database; its URL as the admin user (or as `owner`, without a password)."""
        name = f"bench_{secrets.token_hex(4)}"
        self._execute(f"CREATE DATABASE {name}" + (f" OWNER {owner}" if owner else ""))
        self.databases.append(name)
        return self.url.set(database=name, username=owner or self.url.username, password=None).render_as_string()

    def role(self, password: str) -> str:
        name = f"bench_pw_{secrets.token_hex(4)}"
        self._execute(f"CREATE ROLE {name} LOGIN PASSWORD %s", (password,))
        self.roles.append(name)
        return name

    def _execute(self, sql: str, values: tuple = ()) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, values)

    def close(self) -> None:
        for name in self.databases:
            self._execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        for name in self.roles:
            self._execute(f"DROP ROLE IF EXISTS {name}")
        self.connection.close()


@pytest.fixture(scope="session")
def postgres():
    url = os.environ.get("BENCH_TEST_POSTGRES_URL")
    if not url:  # a laptop without the server; .ci/run always sets it
        pytest.skip("BENCH_TEST_POSTGRES_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    server = Postgres(url)
    yield server
    server.close()


# --- a small real study, shared by the tests of what a study leaves behind ----------------------

TINY_STUDY = """
name = "tiny"
description = "VGG-A with and without BatchNorm on real Fashion-MNIST, small enough for tests."
reference = "vgg-a"
default_budget = "cpu"

[base]
dataset = "fashion-mnist"
model = "vgg-a"
width = 0.125
subset = 2000
epochs = 2
batch_size = 128
optimizer = "adamw"
lr = 0.002
weight_decay = 0.05

[variants]
vgg-a = {}
vgg-a-bn = { batch_norm = true }

[budgets.cpu]
description = "seconds a run: 2000 images, 2 epochs, width 1/8, two seeds"
seeds = [0, 1]
"""


@dataclass
class TinyStudy:
    root: Path
    toml: Path
    uri: str  # the sqlite MLflow store
    journal: Path  # the Optuna journal
    argv: list[str]  # the ablation command's arguments


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> TinyStudy:
    """`python -m bench.ablation` on the tiny study: 4 real runs into a real store and journal."""
    if not FASHION_DIR.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    from bench import ablation

    root = tmp_path_factory.mktemp("tiny-study")
    toml = root / "tiny.toml"
    toml.write_text(TINY_STUDY)
    study = TinyStudy(root, toml, f"sqlite:///{root / 'mlflow.db'}", root / "optuna.journal", [])
    study.argv = [
        "--study",
        str(toml),
        "--tracking-uri",
        study.uri,
        "--storage",
        str(study.journal),
        "--checkpoint-root",
        str(root / "checkpoints"),
        "--report-dir",
        str(root / "reports"),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # runs of seconds get samples
        assert ablation.main(study.argv) == 0
    return study


def raw_idx(path: str | Path) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes, read without bench.data: what the loader is checked against."""
    raw = gzip.decompress(Path(path).read_bytes())
    head = 4 + 4 * raw[3]
    return np.frombuffer(raw, np.uint8, offset=head).reshape(struct.unpack(f">{raw[3]}I", raw[4:head])).copy()
