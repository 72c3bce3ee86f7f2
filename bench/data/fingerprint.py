"""What data a run trained on, kept in its checkpoints, so that a resume on other data is refused.

An image folder is fingerprinted file by file (name, size, modification time): a folder changed
between a kill and the resume would otherwise give a run trained on two datasets, with no word. A
built-in set (Fashion-MNIST, CIFAR, synthetic) is fingerprinted by its recorded split: which images
went to which part, in which order, and the parts' sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.config import RunConfig
from bench.data import tree
from bench.errors import BenchError

Fingerprint = dict[str, Any]
SPLIT_KEYS = ("dataset", "split_hash", "n_train", "n_val", "n_test")


def of(config: RunConfig, info: dict[str, Any]) -> Fingerprint:
    """The fingerprint of a run's data (`info`: its splits' info)."""
    kind, _, path = config.dataset.partition(":")
    if kind == "synthetic-images":
        from bench.data import (
            generate,  # late: it is also a command (python -m bench.data.generate)
        )

        kind, path = "imagefolder", str(generate.cached_tree(path))
    if kind != "imagefolder":
        return {"split": {k: info.get(k) for k in SPLIT_KEYS}}
    found = tree.scan(path)
    files = {}
    for f in found.all_files():
        st = f.stat()
        files[str(f.relative_to(found.root))] = [st.st_size, st.st_mtime_ns]
    return {"files": files}


def difference(saved: Fingerprint | None, now: Fingerprint) -> str | None:
    """What differs between the data a checkpoint was trained on and today's, in a few words; None if
    nothing does (or the checkpoint predates fingerprints, so nothing can be told)."""
    if not saved:
        return None
    if "split" in saved or "split" in now:
        before, after = saved.get("split", {}), now.get("split", {})
        changed = [f"{k} {before.get(k)} -> {after.get(k)}" for k in SPLIT_KEYS if before.get(k) != after.get(k)]
        return f"the split differs ({', '.join(changed)})" if changed else None
    return _files_difference(saved["files"], now["files"])


def _files_difference(before: dict[str, list[int]], after: dict[str, list[int]]) -> str | None:
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(k for k in before.keys() & after.keys() if list(before[k]) != list(after[k]))
    said = []
    if changed:
        first = changed[0]
        what = "size" if before[first][0] != after[first][0] else "modification time"
        more = f" (and {len(changed) - 1} more files changed)" if len(changed) > 1 else ""
        said.append(f"{first} changed {what}{more}")
    if added:
        said.append(f"{len(added)} file(s) added (e.g. {added[0]})")
    if removed:
        said.append(f"{len(removed)} file(s) removed (e.g. {removed[0]})")
    return ", ".join(said) or None


def check(saved: Fingerprint | None, now: Fingerprint, where: Path) -> None:
    """Refuse, in one line naming the difference, to resume the checkpoint at `where` on other data."""
    found = difference(saved, now)
    if found:
        raise BenchError(
            f"{where} was trained on other data: {found}; put the data back as it was, or "
            f"delete {where.parent} to train this run again from epoch 1"
        )
