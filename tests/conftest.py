"""Shared fixtures: fresh PostgreSQL databases on the server that $BENCH_TEST_POSTGRES_URL names,
and a small real study on Fashion-MNIST whose records several test files read."""

from __future__ import annotations

import gzip
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import make_url


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

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
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
    if not Path(FASHION_DIR).is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    from bench import ablation

    root = tmp_path_factory.mktemp("tiny-study")
    toml = root / "tiny.toml"
    toml.write_text(TINY_STUDY)
    study = TinyStudy(root, toml, f"sqlite:///{root / 'mlflow.db'}", root / "optuna.journal", [])
    study.argv = ["--study", str(toml), "--tracking-uri", study.uri, "--storage", str(study.journal),
                  "--checkpoint-root", str(root / "checkpoints"), "--report-dir",
                  str(root / "reports")]
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
