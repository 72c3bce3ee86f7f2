"""Files beside a store: the database file a sqlite URI names, and a lock that serialises setup.

>>> sqlite_path("sqlite:///mlflow.db")
PosixPath('mlflow.db')
>>> sqlite_path("postgresql://db/x") is None
True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

STATE_DIR = Path(".bench")  # the local Optuna journal, checkpoints and worker logs, beside mlflow.db


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative or absolute, `~` expanded), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).expanduser()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if missing) for the `with` block.

    Processes on one machine that set up the same store at once take turns; the lock is released
    when the block ends or the process dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield
