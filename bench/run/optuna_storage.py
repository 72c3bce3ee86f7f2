"""Optuna's storage: opened from a URL (a journal file by default), described without its password,
and locked while workers set a study up.

Every Optuna storage is opened here (bench.run.runner re-exports these names for the commands).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from bench import progress as progress_ui
from bench.errors import BenchError, one_line, redact
from bench.run import journal, owners
from bench.store_files import STATE_DIR, locked, sqlite_path

DEFAULT_STORAGE = STATE_DIR / "optuna.journal"


def open_storage(url: str | None):
    """Optuna storage from a URL: a journal file by default (safe for several local processes)."""
    url = url or str(DEFAULT_STORAGE)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
    try:
        if "://" not in url:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            kept = journal.repair(Path(url))
            if kept is not None:
                progress_ui.console.print(
                    f"[yellow]note:[/] {url} had a torn line (a crash mid-write): "
                    f"removed it, the file as it was is kept as {kept}"
                )
            return JournalStorage(JournalFileBackend(url))
        if url.startswith("sqlite:"):
            # sqlite has no row locks: wait on a busy database instead of failing at once
            return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        # Workers started together on a fresh database would create Optuna's tables at once and collide.
        with storage_lock(url) if url.startswith("postgresql") else contextlib.nullcontext():
            return RDBStorage(
                url,
                heartbeat_interval=owners.HEARTBEAT_S,
                grace_period=owners.GRACE_S,
                heartbeat_stale_trial_callback=retry,
                engine_kwargs={"pool_pre_ping": True},
            )
    except ImportError as exc:
        raise BenchError(
            f"storage {redact(url)} needs a driver that is not installed ({exc.name}): "
            "pip install 'vgg-bench[postgres]'"
        ) from None
    except Exception as exc:
        message = redact(url)
        reason = one_line(exc)
        if "://" in url:
            reason = reason.replace(url, message)
            parsed_password = _password(url)
            if parsed_password:
                reason = reason.replace(parsed_password, "***")
        raise BenchError(f"cannot open Optuna storage {message}: {reason}") from None


def describe_storage(url: str | None) -> str:
    return redact(url) if url else str(DEFAULT_STORAGE)


@contextlib.contextmanager
def storage_lock(url: str | None) -> Iterator[None]:
    """Serialise study set-up (create, enqueue the grid) among workers sharing one storage.

    Re-entrant within a process, so set-up code may open the storage while holding it.
    """
    url = url or str(DEFAULT_STORAGE)
    if url in _HELD_LOCKS:
        yield
        return
    _HELD_LOCKS.add(url)
    try:
        with _exclusive(url):
            yield
    finally:
        _HELD_LOCKS.discard(url)


_HELD_LOCKS: set[str] = set()


@contextlib.contextmanager
def _exclusive(url: str) -> Iterator[None]:
    if url.startswith("postgresql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(738201)"))
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(738201)"))
        finally:
            engine.dispose()
        return
    path = sqlite_path(url) or Path(url)
    with locked(path.with_name(path.name + ".setup-lock")):  # not ".lock": Optuna's journal uses that
        yield


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None
