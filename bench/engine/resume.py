"""Where a run resumes: its last checkpoint, if it and the best weights it counts on are usable and it
was trained on the same data; else epoch 1 (a torn file set aside) or a refusal in one line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.data import fingerprint as data_fingerprint
from bench.engine import checkpoint

if TYPE_CHECKING:
    from bench.engine.results import EpochStats
    from bench.engine.train import Engine

log = logging.getLogger("bench.train")


def resume(
    engine: Engine, last_path: Path | None, best_path: Path | None, trained_on: data_fingerprint.Fingerprint
) -> tuple[int, list[EpochStats], dict[str, Any]]:
    """(epochs done, history, best so far) from the last checkpoint, or a fresh start without one, or
    when it or the best weights it counts on are unusable. Refused when the data has changed since."""
    fresh = 0, [], {"val_acc": -1.0, "epoch": 0}
    if last_path is None or not last_path.exists():
        return fresh
    state = usable(engine, last_path)
    if state is None:
        return fresh
    data_fingerprint.check(state.get("data"), trained_on, last_path)
    if best_path is not None and state["best"]["epoch"] and usable(engine, best_path) is None:
        return fresh  # the best weights are lost and only training again gives them back
    return engine.restore(state)


def usable(engine: Engine, path: Path) -> dict[str, Any] | None:
    """The run's checkpoint at `path`, or None if it is missing or torn by a crash (then set aside, kept
    to look at: the run starts again from epoch 1)."""
    try:
        if path.exists():
            return checkpoint.load(path, config_hash=engine.config.hash)
        log.warning("%s is missing; the run starts again from epoch 1", path)
    except checkpoint.Unreadable as exc:
        if engine.group.is_main:  # every rank starts over; one renames the file
            aside = checkpoint.set_aside(path)
            log.warning("%s; set aside as %s, the run starts again from epoch 1", exc, aside)
    return None
