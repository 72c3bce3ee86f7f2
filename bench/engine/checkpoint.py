"""Checkpoints that survive a crash and refuse what is not ours.

Written to a temporary file in the same folder and renamed, so a kill mid-write leaves the
previous checkpoint intact. Loaded with `weights_only=True`, so a file never runs code, and
checked for our format marker and the run's config hash, so a checkpoint of another run or
another architecture is refused in one line instead of half-loaded.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError, one_line

FORMAT = "vgg-bench/1"


class Unreadable(BenchError):
    """The file is not a checkpoint at all (torn, corrupt, foreign), as opposed to another run's."""


def save(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: str | Path, what: str, map_location="cpu") -> Any:
    """torch.load(weights_only=True), any failure told in one line naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, corrupt, or a pickle that wants to run code
        raise Unreadable(f"{path} is not a readable {what} ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    if "weights_only" in text or "Weights only" in text:
        # torch's own text suggests weights_only=False, which would let the file run code: never that
        return "it holds Python objects, not only tensors; re-save it with torch.save(model.state_dict(), path)"
    return f"corrupt, truncated or foreign: {one_line(exc, 160)}"


def load(path: str | Path, *, config_hash: str | None = None, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save`; with `config_hash`, insist that it belongs to that run."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"checkpoint {path} does not exist")
    payload = read(path, "vgg-bench checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise Unreadable(f"{path} is not a vgg-bench checkpoint (no '{FORMAT}' marker)")
    if config_hash is not None and payload.get("config_hash") != config_hash:
        raise BenchError(
            f"{path} belongs to run {payload.get('config_hash')} ({payload.get('config', {}).get('model')}),"
            f" not to run {config_hash}: delete it or point to the right checkpoint"
        )
    return payload


def set_aside(path: str | Path) -> Path:
    """Rename an unusable checkpoint so it is never read again but stays there to be looked at."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    return aside


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state_dict, turning a shape or key mismatch into one line naming the first culprit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or wrong:
        if wrong:
            k = wrong[0]
            detail = f"{k} is {tuple(state[k].shape)} there, {tuple(own[k].shape)} here"
        else:
            detail = f"missing {missing[:1]}, unexpected {extra[:1]}"
        raise BenchError(f"{source} does not fit this architecture: {detail}")
    model.load_state_dict(state)
