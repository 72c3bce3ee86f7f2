"""The folder an --out / --out-dir flag names, checked before a command does its work: a file of that
name (or a file where a folder above it should be) is one line, not a FileExistsError at the end."""

from __future__ import annotations

import os
from pathlib import Path

from bench.errors import BenchError


def check(path: str | Path, flag: str) -> Path:
    """`path` as a Path, if it is a folder that can be written or can be made; else one line."""
    folder = Path(path)
    for place in (folder, *folder.absolute().parents):
        if not place.exists():
            continue  # made when the command writes
        if not place.is_dir():
            what = "is a file" if place == folder else f"is under {place}, which is a file"
            raise BenchError(f"{flag} {folder} {what}, not a folder: name a folder (it is made if missing)")
        if not os.access(place, os.W_OK | os.X_OK):
            raise BenchError(f"{flag} {folder}: {place} cannot be written; name a folder you can write to")
        return folder
    return folder
