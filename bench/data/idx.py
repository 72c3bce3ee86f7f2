"""Fashion-MNIST and MNIST: IDX files (gzipped or not) read directly, downloaded by torchvision when missing."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import torch

from bench.data import files
from bench.errors import BenchError, one_line

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [str(i) for i in range(10)]
CLASSES = {"fashion-mnist": FASHION_CLASSES, "mnist": MNIST_CLASSES}
NATIVE_SIZE = 28

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
GZ_FILES = tuple(f"{stem}.gz" for stem in IDX_FILES.values())  # as Fashion-MNIST is distributed
_TORCHVISION = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}


def load(name: str, data_dir):
    """(train images uint8 [N, 1, 28, 28], train labels, test images, test labels, source folder)."""
    roots, dest = files.search_roots(name, data_dir)
    found = next((f for root in roots for folder in _candidates(root, name) if (f := _find(folder))), None)
    if found is None:

        def fetch(tmp: Path) -> list[Path]:
            import torchvision.datasets as tvd

            getattr(tvd, _TORCHVISION[name])(root=str(tmp), train=True, download=True)
            raw = tmp / _TORCHVISION[name] / "raw"
            return [raw / file for file in GZ_FILES]

        try:
            folder = files.download(name, dest, fetch)
        except files.DownloadFailed as exc:
            where = ", ".join(str(r) for r in roots)
            hint = "`apt-get install dataset-fashion-mnist`, or put " if name == "fashion-mnist" else "put "
            raise BenchError(
                f"{name} not found in {where} and download failed ({exc}; offline?): {hint}"
                f"{', '.join(GZ_FILES)} in --data-dir (or $BENCH_DATA)"
            ) from None
        found = _find(folder)
        if found is None:
            raise BenchError(f"{name}: download into {folder} did not produce the IDX files; delete {folder} and retry")
    images = _read(found["train_x"], 3)
    labels = _read(found["train_y"], 1)
    test_images = _read(found["test_x"], 3)
    test_labels = _read(found["test_y"], 1)
    for x, y, kind in ((images, labels, "train"), (test_images, test_labels, "t10k")):
        if len(x) != len(y):
            raise BenchError(
                f"{name}: {kind} images ({len(x)}) and labels ({len(y)}) differ in count in "
                f"{found['train_x'].parent}; replace the files"
            )
        if len(y) and int(y.max()) > 9:
            raise BenchError(
                f"{name}: labels above 9 in {found[kind.replace('t10k', 'test') + '_y']}; replace the file"
            )
    return (
        images.unsqueeze(1),
        labels.long(),
        test_images.unsqueeze(1),
        test_labels.long(),
        str(found["train_x"].parent),
    )


def _find(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in IDX_FILES.items():
        for cand in (folder / f"{stem}.gz", folder / stem):
            if cand.is_file():
                found[key] = cand
                break
        else:
            return None
    return found


def _candidates(root: Path, name: str) -> list[Path]:
    tv = _TORCHVISION[name]
    return [root, root / name, root / tv / "raw", root / name / tv / "raw"]


def _read(path: Path, ndim: int) -> torch.Tensor:
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            data = bytearray(fh.read())
    except (OSError, EOFError, ValueError) as exc:
        raise BenchError(f"cannot read {path}: {one_line(exc)}; replace the file") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise BenchError(f"{path} is not an IDX file of unsigned bytes; replace it")
    nd = data[3]
    if nd != ndim:
        raise BenchError(f"{path} has {nd} dimensions, expected {ndim}; is it the right file?")
    head = 4 + 4 * nd
    if len(data) < head:
        raise BenchError(f"{path} is truncated; replace it")
    dims = struct.unpack(f">{nd}I", bytes(data[4:head]))
    count = math.prod(dims)
    if len(data) != head + count:
        raise BenchError(
            f"{path} holds {len(data) - head} bytes of data, expected {count} for shape {dims}; replace it"
        )
    return torch.frombuffer(data, dtype=torch.uint8, offset=head, count=count).view(*dims)
