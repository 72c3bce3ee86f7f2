"""Shared fixtures: fresh PostgreSQL databases on the server that $BENCH_TEST_POSTGRES_URL names."""

from __future__ import annotations

import os
import secrets

import pytest
from sqlalchemy.engine import make_url


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
