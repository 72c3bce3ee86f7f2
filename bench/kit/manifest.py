"""The device kit's manifest: what a kit holds and for which Python, written by the build, checked by the run.

Standard library only: the run reads it on a GPU machine before anything else is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.errors import BenchError, one_line

MANIFEST = "manifest.json"
WHEELS = "wheels"
DATA = "data"
KEYS = {"python", "wheels", "requirements"}  # what the run reads
BUILD_HINT = "python -m bench.kit build --python {python}"


def running_python() -> str:
    """The running interpreter as the kit names Pythons: '3.12'."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def write_text(path: Path, text: str) -> None:
    """A file written whole or not at all: a temporary sibling renamed into place. (bench.data.files has one
    that warns instead of failing, and importing it loads torch.)"""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(kit: Path, manifest: dict) -> None:
    write_text(kit / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def read(kit: Path) -> dict:
    """The manifest of the kit folder `kit`, or one line saying why there is none to use."""
    hint = BUILD_HINT.format(python=running_python())
    if not kit.is_dir():
        raise BenchError(f"kit folder {kit} does not exist; build it with {hint} and carry it along")
    try:
        manifest = json.loads((kit / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"{kit} is not a kit ({MANIFEST}: {one_line(exc)}); build it with {hint}") from None
    absent = sorted(KEYS - set(manifest)) if isinstance(manifest, dict) else sorted(KEYS)
    if absent:
        raise BenchError(f"{kit}/{MANIFEST} lacks {', '.join(absent)}; build the kit again with {hint}")
    return manifest


def check(kit: Path, manifest: dict) -> None:
    """One line if the kit was built for another Python or lacks a wheel its manifest lists."""
    here = running_python()
    if manifest["python"] != here:
        raise BenchError(
            f"kit {kit} was built for Python {manifest['python']}, this is Python {here} "
            f"({sys.executable}); build it with {BUILD_HINT.format(python=here)}"
        )
    missing = [w["file"] for w in manifest["wheels"] if not (kit / WHEELS / w["file"]).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise BenchError(
            f"kit {kit} lacks the wheel {missing[0]}{more} listed in its {MANIFEST}; build it "
            f"again with {BUILD_HINT.format(python=here)}"
        )


def digest(manifest: dict) -> str:
    """A short name for the kit's contents: an environment installed from one kit is reused for it only."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
