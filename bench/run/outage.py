"""Faults of the machine, not of a run: a full disk, a store that stopped answering.

Such a fault stops the study: every later run would meet it too. It is told in one line that says
what happened and that running the same command again resumes (a trial left RUNNING is then
failed and queued again, a run resumes from its last checkpoint), instead of each run's traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator

from bench.errors import one_line

FULL = (errno.ENOSPC, errno.EDQUOT)
# The words drivers and MLflow use when a store cannot be reached (sqlalchemy's OperationalError
# is wrapped by MLflow into an MlflowException that keeps only its text).
UNREACHABLE = (
    "OperationalError",
    "InterfaceError",
    "could not connect",
    "connection refused",
    "server closed the connection",
    "terminating connection",
    "not currently accepting connections",
    "Max retries exceeded",
    "database is locked",
)
# MLflow logs each database error with its traceback before raising it, and its system-metrics
# thread warns at every failed sample: the raised error is told once, in one line, instead.
NOISY = {"mlflow.store.db.utils": logging.CRITICAL, "mlflow.system_metrics": logging.ERROR}
RESUME = "run the same command again to resume (finished runs are kept; cut-off ones resume from checkpoints)"


def stop_reason(exc: BaseException) -> str | None:
    """One line for a full disk or an unreachable store found anywhere in `exc`'s chain, else None."""
    for link in _chain(exc):
        text = f"{type(link).__name__}: {link}"
        if (
            (isinstance(link, OSError) and link.errno in FULL)
            or "disk is full" in text
            or "No space left on device" in text
        ):
            return f"the disk is full ({one_line(link)}); free some space, then {RESUME}"
        if any(word.lower() in text.lower() for word in UNREACHABLE):
            return f"a store stopped answering mid-study ({one_line(link)}); once it is back, {RESUME}"
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what caused it or was being handled when it came, each once."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


@contextlib.contextmanager
def one_voice() -> Iterator[None]:
    """Within the block, the loggers that would repeat a fault's traceback keep quiet."""
    loggers = {logging.getLogger(name): level for name, level in NOISY.items()}
    before = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level in before.items():
            logger.setLevel(level)
