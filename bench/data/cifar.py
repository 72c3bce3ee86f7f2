"""CIFAR-10 and CIFAR-100: the python batches read directly, downloaded by torchvision when missing.

The batches are pickles, and unpickling runs whatever code a file names; so they are read with an
unpickler that admits only what these files hold (dicts, lists, bytes, strings, numbers and numpy
arrays) and refuses any other global, naming the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from bench.data import files
from bench.errors import BenchError, one_line

NATIVE_SIZE = 32
SPECS = {
    "cifar10": dict(
        folder="cifar-10-batches-py",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        meta="batches.meta",
        names=b"label_names",
        labels=b"labels",
        tv="CIFAR10",
    ),
    "cifar100": dict(
        folder="cifar-100-python",
        train=["train"],
        test=["test"],
        meta="meta",
        names=b"fine_label_names",
        labels=b"fine_labels",
        tv="CIFAR100",
    ),
}

# What numpy needs to rebuild an array (numpy 1 and 2 spell the module differently), and the codec
# call with which Python 3 writes bytes into protocol-2 pickles. Nothing here runs other code.
_SAFE_GLOBALS = {
    (module, name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def unpickle(path: Path) -> dict:
    """A CIFAR batch as a dict with bytes keys; anything but plain data is refused in one line."""
    try:
        with open(path, "rb") as fh:
            obj = _DataOnlyUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - a broken or hostile file, explained in one line
        raise BenchError(f"cannot read {path}: {one_line(exc)}; replace it with the original file") from None
    if not isinstance(obj, dict):
        raise BenchError(f"{path} holds a {type(obj).__name__}, not a CIFAR batch; replace it")
    return obj


def load(name: str, data_dir):
    """(train images uint8 [N, 3, 32, 32], train labels, test images, test labels, classes, source)."""
    spec = SPECS[name]
    roots, dest = files.search_roots(name, data_dir)
    needed = spec["train"] + spec["test"] + [spec["meta"]]
    folder = next(
        (
            cand
            for root in roots
            for cand in (root / spec["folder"], root / name / spec["folder"])
            if all((cand / f).is_file() for f in needed)
        ),
        None,
    )
    if folder is None:

        def fetch(tmp: Path) -> list[Path]:
            import torchvision.datasets as tvd

            getattr(tvd, spec["tv"])(root=str(tmp), train=True, download=True)
            return [tmp / spec["folder"]]

        try:
            folder = files.download(name, dest, fetch) / spec["folder"]
        except files.DownloadFailed as exc:
            where = ", ".join(str(r) for r in roots)
            raise BenchError(
                f"{name} not found in {where} and download failed ({exc}; offline?): put the extracted "
                f"`{spec['folder']}` folder in --data-dir (or $BENCH_DATA), e.g. {dest / spec['folder']}"
            ) from None
    meta = unpickle(folder / spec["meta"])
    try:
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[spec["names"]]]
    except (KeyError, TypeError) as exc:
        raise BenchError(f"{folder / spec['meta']} has no class names ({one_line(exc)}); replace it") from None

    def read(names):
        xs, ys = [], []
        for f in names:
            d = unpickle(folder / f)
            try:
                xs.append(torch.as_tensor(d[b"data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
                ys.append(torch.as_tensor(d[spec["labels"]], dtype=torch.int64))
            except (KeyError, RuntimeError, TypeError, ValueError) as exc:
                raise BenchError(f"{folder / f} is not a {name} batch ({one_line(exc)}); replace it") from None
        return torch.cat(xs), torch.cat(ys)

    train_x, train_y = read(spec["train"])
    test_x, test_y = read(spec["test"])
    return train_x, train_y, test_x, test_y, classes, str(folder)
