"""Repair an Optuna journal file that a crash left with a torn line.

Optuna appends each log as one JSON line. A process killed mid-write (or a full disk) can leave
the last line cut short; the next append then lands on the same line, and every later read of
the journal fails with a JSONDecodeError. Before Optuna reads the file, each line that is not
whole JSON is dropped, or, when a later append was glued onto a torn fragment, cut back to that
append; the file as it was is kept beside it first. The torn log itself is lost: it was never
written whole, and the runner treats its trial as one whose worker died.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from optuna.storages.journal import JournalFileSymlinkLock

LOG_START = b'{"op_code"'  # how every log Optuna writes begins


def repair(path: Path) -> Path | None:
    """Mend `path` in place if it has torn lines; return where the original was kept, else None."""
    if not path.is_file():
        return None
    lock = JournalFileSymlinkLock(str(path))  # the lock Optuna's JournalFileBackend takes to append
    lock.acquire()
    try:
        original = path.read_bytes()
        mended = b"".join(whole for line in original.splitlines(keepends=True) if (whole := _whole(line)))
        if mended == original:
            return None
        backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(path, backup)
        tmp = path.with_name(f".{path.name}.repair")
        tmp.write_bytes(mended)
        os.replace(tmp, path)
        return backup
    finally:
        lock.release()


def _whole(line: bytes) -> bytes | None:
    """The line if it is one whole log; else the whole log glued after a torn fragment; else None."""
    if not line.endswith(b"\n"):
        return None
    start = 0
    while start != -1:
        try:
            json.loads(line[start:])
            return line[start:]
        except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
            start = line.find(LOG_START, start + 1)
    return None
