"""Datasets as uint8 tensors on the training device, with batching and augmentation done on whole batches.

`load(name, ...)` returns a `Splits`: train / val / test images as uint8 [N, C, H, W] and int64 labels, all
already on the device, plus the per-channel mean and std of the training split and an `info` dict that a run
records. `Splits.batches(...)` slices, augments (random crop with 4 px zero padding, random horizontal flip)
and normalises whole batches on the device; every random draw comes from the caller's torch.Generator.

Datasets
--------
fashion-mnist, mnist
    IDX files (gzipped or not) read directly. Looked for in `data_dir` (else $BENCH_DATA), then the system
    location (Debian's `dataset-fashion-mnist` installs /usr/share/datasets/fashion-mnist; Debian ships no
    MNIST package), then earlier downloads under the cache root; if none is found, torchvision downloads
    them into `data_dir` / $BENCH_DATA / the cache root, under `<name>/`. 28 px images are zero-padded to 32
    (so five 2x2 poolings fit) unless another `image_size` is asked for, which resizes them once at load.
cifar10, cifar100
    The python pickles (`cifar-10-batches-py`, `cifar-100-python`) read directly; looked for and downloaded
    (with torchvision's CIFAR10/CIFAR100) the same way. Native 32 px.
imagefolder:PATH
    Either PATH/train/<class>/* (+ PATH/val/<class>/*, + PATH/test/<class>/*) or one tree PATH/<class>/*.
    Without test/, the test set is val/ when there is one (info['test_source'] says so), else 10% of the
    images carved out by split_seed; without val/, validation is `val_fraction` of the training pool. So a
    single tree is split 80/10/10 by default. Images are decoded once with PIL: as "L" when every image is
    greyscale, else "RGB" (alpha dropped); the shorter side is resized to `image_size` (default 224) and the
    centre cropped. The decoded tensors are cached in $BENCH_CACHE (default ~/.cache/vgg-bench)
    /imagefolder/<key>.pt, where the key hashes the absolute path, every file's name, size and mtime and the
    image size; a later load with the same files reads the cache (info['cache'] == 'hit').
synthetic[:key=value,...]
    A generated, learnable task: each class is a fixed random low-frequency pattern, each image a randomly
    shifted (up to image_size/4 px) and rescaled copy of its class pattern plus Gaussian pixel noise. With
    the defaults, a 3-conv CNN reaches ~60% (with augmentation) to ~90% (without) test accuracy in 300 Adam
    steps of 64 images; nearest-class-mean gets ~65%, logistic regression ~75% (chance 10%). Options:
    classes (10), channels (1), size (2000 training images), test (500), noise (1.0). The images are fixed
    by the options and image_size; split_seed only chooses the train/val split, as for real datasets.

Splits: the official training set (or imagefolder pool) is permuted with `split_seed`; `subset` keeps the
first `subset` images of that permutation; `val_fraction` of those (floor, at least 1 when > 0) become
validation. The official test set is used whole. Environment: $BENCH_DATA (where datasets live),
$BENCH_CACHE (cache root, default ~/.cache/vgg-bench), $BENCH_OFFLINE=1 (never try to download).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import os
import pickle
import re
import shutil
import socket
import struct
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from bench.errors import BenchError, choices, fail

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder:PATH", "synthetic")
PARTS = ("train", "val", "test")

SYSTEM_LOCATIONS = {"fashion-mnist": ("/usr/share/datasets/fashion-mnist",)}
CROP_PAD = 4
DOWNLOAD_TIMEOUT_S = 30.0
_CACHE_FORMAT = 1  # bump when the imagefolder cache layout or the decoding changes

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MNIST_CLASSES = [str(i) for i in range(10)]

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], meta="batches.meta", names=b"label_names", labels=b"labels",
                    tv="CIFAR10"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     names=b"fine_label_names", labels=b"fine_labels", tv="CIFAR100"),
}
_MNIST_TV = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_SYNTHETIC_DEFAULTS = {"classes": 10, "channels": 1, "size": 2000, "test": 500, "noise": 1.0}


# --------------------------------------------------------------------------------------------------
# Splits


@dataclass(repr=False)
class Splits:
    train_x: torch.Tensor  # uint8 [N, C, H, W] on the device
    train_y: torch.Tensor  # int64 [N] on the device
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]  # per channel, 0..1 scale, from the training split
    std: tuple[float, ...]
    info: dict
    # Positions of the train / val images in the shuffled-from pool (the official training set, or the
    # imagefolder pool), on the CPU: bookkeeping for tests and for anyone checking a split.
    train_index: torch.Tensor | None = field(default=None)
    val_index: torch.Tensor | None = field(default=None)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def __repr__(self) -> str:
        i = self.info
        return (f"Splits({i.get('dataset')!r}, train={i.get('n_train')}, val={i.get('n_val')}, "
                f"test={i.get('n_test')}, shape={tuple(self.train_x.shape[1:])}, "
                f"classes={self.num_classes}, device={self.device})")

    def part(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        if part not in PARTS:
            choices("split part", part, PARTS)
        return getattr(self, f"{part}_x"), getattr(self, f"{part}_y")

    def num_batches(self, part: str, batch_size: int, drop_last: bool = False) -> int:
        _check_batch_size(batch_size)
        n = len(self.part(part)[1])
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(self, part: str, batch_size: int, *, generator: torch.Generator | None = None,
                augment: bool = False, shuffle: bool = False, drop_last: bool = False,
                channels_last: bool = False, start_batch: int = 0,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (float32 normalised images [B, C, H, W], int64 labels [B]) on the data's device.

        All randomness of one pass (the order, the crop offsets, the flips) is drawn from `generator` before
        the first batch is yielded, so the generator's state after the call does not depend on how many
        batches are consumed, and `start_batch=k` resumes a pass at its k-th batch with exactly the batches
        the full pass would have produced (give it the generator state saved at the start of the pass).
        """
        x, y = self.part(part)
        _check_batch_size(batch_size)
        if start_batch < 0:
            fail(f"start_batch must be >= 0, got {start_batch}")
        n = len(y)
        dev = x.device
        gdev = generator.device if generator is not None else dev

        # Draw everything for the pass up front, on the generator's device, then move it to the data.
        order = torch.randperm(n, generator=generator, device=gdev).to(dev) if shuffle else None
        if augment:
            offsets = torch.randint(0, 2 * CROP_PAD + 1, (n, 2), generator=generator, device=gdev).to(dev)
            flips = torch.randint(0, 2, (n,), generator=generator, device=gdev).to(dev).bool()

        c = x.shape[1]
        scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], dtype=torch.float32, device=dev)
        shift = torch.tensor([m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32, device=dev)
        scale, shift = scale.view(1, c, 1, 1), shift.view(1, c, 1, 1)

        stop = n - n % batch_size if drop_last else n
        for lo in range(start_batch * batch_size, stop, batch_size):
            hi = min(lo + batch_size, n)
            if order is None:
                xb, yb = x[lo:hi], y[lo:hi]
            else:
                idx = order[lo:hi]
                xb, yb = x[idx], y[idx]
            if augment:
                sel = slice(lo, hi) if order is None else order[lo:hi]
                xb = crop_flip(xb, offsets[sel], flips[sel])
            out = xb.float()
            if channels_last:
                out = out.contiguous(memory_format=torch.channels_last)
            out.mul_(scale).sub_(shift)
            yield out, yb


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        fail(f"batch size must be a positive integer, got {batch_size!r}")


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = CROP_PAD) -> torch.Tensor:
    """Random-crop-with-padding and horizontal flip of a whole batch in one gather.

    x: [B, C, H, W] (any dtype); offsets: int [B, 2] in 0..2*pad (row, column of the crop's corner in the
    zero-padded image; `pad` means no shift); flips: bool [B]. Returns a new [B, C, H, W] tensor.
    """
    b, c, h, w = x.shape
    if b == 0:
        return x.clone()
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = x.new_zeros((b, c, hp, wp))
    padded[:, :, pad:pad + h, pad:pad + w] = x
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    cols = torch.where(flips[:, None], w - 1 - ar_w, ar_w) + offsets[:, 1:2]  # [B, W]
    rows = ar_h + offsets[:, 0:1]  # [B, H]
    flat = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.view(b, c, hp * wp).gather(2, flat).view(b, c, h, w)


# --------------------------------------------------------------------------------------------------
# load


def load(name: str, *, data_dir: str | os.PathLike | None = None, image_size: int | None = None,
         subset: int | None = None, val_fraction: float = 0.1, split_seed: int = 0,
         device: str | torch.device = "cpu") -> Splits:
    """Load a dataset as uint8 tensors on `device`, split into train / val / test (see the module doc)."""
    if not isinstance(name, str) or not name:
        choices("dataset", name, DATASETS)
    dev = _device(device)
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool)
                                   or image_size < 8):
        fail(f"image size must be an integer >= 8, got {image_size!r}")
    if subset is not None and (not isinstance(subset, int) or isinstance(subset, bool)):
        fail(f"subset must be an integer number of images, got {subset!r}")
    if not isinstance(split_seed, int) or isinstance(split_seed, bool):
        fail(f"split seed must be an integer, got {split_seed!r}")
    try:
        val_fraction = float(val_fraction)
    except (TypeError, ValueError):
        raise BenchError(f"val fraction must be a number in [0, 1), got {val_fraction!r}") from None
    if not 0.0 <= val_fraction < 1.0:
        fail(f"val fraction must be in [0, 1), got {val_fraction}")

    base, _, arg = name.partition(":")
    base = base.strip().lower()
    info: dict = {"dataset": f"{base}:{arg}" if arg else base}
    test_fraction = 0.0
    fixed_val = None  # (x, y) of a ready-made validation set (imagefolder val/)
    if base in ("fashion-mnist", "mnist"):
        if arg:
            fail(f"dataset {base!r} takes no options (got {name!r})")
        pool_x, pool_y, test_x, test_y, source = _load_mnist_family(base, data_dir)
        classes = list(FASHION_CLASSES if base == "fashion-mnist" else MNIST_CLASSES)
        info["native_size"] = 28
    elif base in _CIFAR:
        if arg:
            fail(f"dataset {base!r} takes no options (got {name!r})")
        pool_x, pool_y, test_x, test_y, classes, source = _load_cifar(base, data_dir)
        info["native_size"] = 32
    elif base == "synthetic":
        opts = _synthetic_options(arg)
        pool_x, pool_y, test_x, test_y, classes = make_synthetic(image_size or 32, **opts)
        source = "generated"
        info["options"] = dict(opts)
        info["native_size"] = image_size or 32
    elif base == "imagefolder":
        if not arg:
            fail("imagefolder needs a path: use imagefolder:PATH with PATH/<class>/<image> "
                 "or PATH/train/<class>/<image>")
        image_size = image_size or 224
        groups, classes, folder_info = _load_imagefolder(arg, image_size)
        info.update(folder_info)
        source = folder_info["path"]
        pool_x, pool_y = groups["train"]
        fixed_val = groups.get("val")
        if "test" in groups:
            test_x, test_y = groups["test"]
            info["test_source"] = "test/"
        elif fixed_val is not None:
            test_x, test_y = fixed_val
            info["test_source"] = "val/ (no test/ folder: the test set is the validation set)"
        else:
            test_x = test_y = None
            test_fraction = 0.1
            info["test_source"] = "carved from the pool (10%, split_seed)"
        info["val_source"] = "val/" if fixed_val is not None else "carved from the pool (val_fraction, split_seed)"
    else:
        choices("dataset", name, DATASETS)

    if base in ("fashion-mnist", "mnist", "cifar10", "cifar100"):
        pool_x, test_x, info["resize"] = fit_size(pool_x, test_x, info["native_size"], image_size)

    pool_size = len(pool_y)
    if subset is not None:
        if subset < 2 * len(classes):
            fail(f"subset {subset} is too small for {len(classes)} classes: use at least {2 * len(classes)}")
        if subset > pool_size:
            fail(f"subset {subset} is larger than the {pool_size} training images of {name}: "
                 f"use at most {pool_size}, or no subset")
    if fixed_val is not None:
        vf_used = 0.0
    else:
        vf_used = val_fraction
    train_idx, val_idx, test_idx = _split(pool_size, subset, vf_used, test_fraction, split_seed, name)

    train_x, train_y = pool_x[train_idx], pool_y[train_idx]
    if fixed_val is not None:
        val_x, val_y = fixed_val
    else:
        val_x, val_y = pool_x[val_idx], pool_y[val_idx]
    if test_idx is not None:
        test_x, test_y = pool_x[test_idx], pool_y[test_idx]
    del pool_x, pool_y

    mean, std = channel_stats(train_x)
    info.update({
        "source": str(source),
        "split_seed": split_seed,
        "subset": subset,
        "val_fraction": vf_used if fixed_val is None else None,
        "test_fraction": test_fraction if test_fraction else None,
        "pool_size": pool_size,
        "n_train": len(train_y), "n_val": len(val_y), "n_test": len(test_y),
        "image_size": int(train_x.shape[-1]),
        "in_channels": int(train_x.shape[1]),
        "num_classes": len(classes),
        "split_hash": _split_hash(train_idx, val_idx, test_idx),
        "mean": [round(m, 6) for m in mean],
        "std": [round(s, 6) for s in std],
    })
    info = {k: info[k] for k in sorted(info, key=_info_order)}

    tensors = [train_x, train_y.long(), val_x, val_y.long(), test_x, test_y.long()]
    moved: dict[int, torch.Tensor] = {}  # the test set may be the val set itself: move it once
    for t in tensors:
        if id(t) not in moved:
            moved[id(t)] = _to_device(t.contiguous(), dev)
    tensors = [moved[id(t)] for t in tensors]
    return Splits(*tensors, classes=list(classes), mean=mean, std=std, info=info,
                  train_index=train_idx, val_index=val_idx if fixed_val is None else None)


_INFO_FIRST = ("dataset", "source", "split_seed", "subset", "val_fraction", "n_train", "n_val", "n_test",
               "image_size")


def _info_order(key: str) -> tuple[int, str]:
    return (_INFO_FIRST.index(key), "") if key in _INFO_FIRST else (len(_INFO_FIRST), key)


def _device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise BenchError(f"bad device {device!r} ({exc}); use e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        fail(f"device {device!r} asked for but CUDA is not available on this machine; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        fail(f"device {device!r} asked for but MPS is not available on this machine; use --device cpu")
    return dev


def _to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    if dev.type == "cpu":
        return t
    if dev.type == "cuda":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


def _split(pool: int, subset: int | None, val_fraction: float, test_fraction: float, seed: int, name: str):
    """Seeded permutation of the pool -> (train, val, test-or-None) index tensors (CPU, int64)."""
    perm = torch.randperm(pool, generator=torch.Generator().manual_seed(seed))
    if subset is not None:
        perm = perm[:subset]
    n = len(perm)
    n_test = max(1, math.floor(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, math.floor(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_val - n_test < 1:
        fail(f"{name}: {n} images leave nothing to train on after taking {n_val} for validation"
             + (f" and {n_test} for test" if n_test else "") + "; lower val_fraction or raise subset")
    test_idx = perm[:n_test] if n_test else None
    val_idx = perm[n_test:n_test + n_val]
    train_idx = perm[n_test + n_val:]
    return train_idx, val_idx, test_idx


def _split_hash(*indices: torch.Tensor | None) -> str:
    """A short fingerprint of which pool images went to which part, in which order."""
    h = hashlib.sha256()
    for idx in indices:
        if idx is not None:
            h.update(idx.numpy().astype("<i8").tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std on the 0..1 scale of uint8 images [N, C, H, W], via histograms."""
    c = x.shape[1]
    counts = torch.zeros(c, 256, dtype=torch.float64)
    for lo in range(0, len(x), 8192):
        chunk = x[lo:lo + 8192]
        for ch in range(c):
            counts[ch] += torch.bincount(chunk[:, ch].reshape(-1), minlength=256).double().cpu()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum(1).clamp_min(1)
    mean = (counts * values).sum(1) / total
    var = ((counts * values.square()).sum(1) / total - mean.square()).clamp_min(0)
    std = var.sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant images: do not divide by zero
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def fit_size(train_x, test_x, native: int, image_size: int | None):
    """MNIST family: pad 28 -> 32 by default; any other size resizes. CIFAR: resize unless 32."""
    if native == 28 and image_size in (None, 32):
        pad = (2, 2, 2, 2)
        return F.pad(train_x, pad), F.pad(test_x, pad), "zero-pad 28->32"
    if image_size is None or image_size == native:
        return train_x, test_x, None
    return (_resize(train_x, image_size), _resize(test_x, image_size),
            f"bilinear antialias {native}->{image_size}")


def _resize(x: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for lo in range(0, len(x), chunk):
        part = F.interpolate(x[lo:lo + chunk].float(), size=(size, size), mode="bilinear",
                             align_corners=False, antialias=True)
        out[lo:lo + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


# --------------------------------------------------------------------------------------------------
# Locating and downloading file datasets


def cache_root() -> Path:
    env = os.environ.get("BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vgg-bench"


def _search_roots(name: str, data_dir) -> tuple[list[Path], Path]:
    """(directories to look in, in order; the directory a download goes to)."""
    user = data_dir if data_dir is not None else os.environ.get("BENCH_DATA") or None
    roots: list[Path] = []
    if user is not None:
        roots.append(Path(user).expanduser())
    roots += [Path(p) for p in SYSTEM_LOCATIONS.get(name, ())]
    cache = cache_root()
    if cache not in roots:
        roots.append(cache)
    dest = Path(user).expanduser() if user is not None else cache
    return roots, dest


def _offline() -> bool:
    return os.environ.get("BENCH_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    inner = re.search(r"<urlopen error [^>]*>", text)  # torchvision's multi-mirror report: keep one reason
    if inner:
        text = inner.group(0)
    text = text or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _download(name: str, dest: Path, fetch) -> Path | None:
    """Run `fetch(tmpdir)` with torchvision quiet and a socket timeout; move what it made into dest/name.

    Returns the final folder, or raises _DownloadFailed with a one-line reason. Nothing is left behind on
    failure (the download happens in a temporary folder inside `dest`).
    """
    if _offline():
        raise _DownloadFailed("BENCH_OFFLINE is set")
    created = [p for p in (dest, *dest.parents) if not p.exists()]  # removed again if the download fails
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=dest))
    except OSError as exc:
        raise _DownloadFailed(f"cannot write to {dest}: {_one_line(exc)}") from None
    ok = False
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    quiet = io.StringIO()
    try:
        print(f"downloading {name} into {dest / name} ...", file=sys.stderr, flush=True)
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            made = fetch(tmp)
        final = dest / name
        final.mkdir(parents=True, exist_ok=True)
        for item in made:
            target = final / item.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(item, target)
        ok = True
        return final
    except BenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the download is reported in one line
        raise _DownloadFailed(_one_line(exc)) from None
    finally:
        socket.setdefaulttimeout(old_timeout)
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for p in created:  # innermost first; only folders this call made, and only while empty
                with contextlib.suppress(OSError):
                    p.rmdir()


class _DownloadFailed(Exception):
    pass


# --- MNIST family


def _find_idx(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in _IDX_FILES.items():
        for cand in (folder / f"{stem}.gz", folder / stem):
            if cand.is_file():
                found[key] = cand
                break
        else:
            return None
    return found


def _idx_candidates(root: Path, name: str) -> list[Path]:
    tv = _MNIST_TV[name]
    return [root, root / name, root / tv / "raw", root / name / tv / "raw"]


def _load_mnist_family(name: str, data_dir):
    roots, dest = _search_roots(name, data_dir)
    files = None
    for root in roots:
        for folder in _idx_candidates(root, name):
            files = _find_idx(folder)
            if files:
                break
        if files:
            break
    if files is None:
        def fetch(tmp: Path) -> list[Path]:
            import torchvision.datasets as tvd
            cls = getattr(tvd, _MNIST_TV[name])
            cls(root=str(tmp), train=True, download=True)
            raw = tmp / _MNIST_TV[name] / "raw"
            return [raw / f"{stem}.gz" for stem in _IDX_FILES.values()]
        try:
            folder = _download(name, dest, fetch)
        except _DownloadFailed as exc:
            where = ", ".join(str(r) for r in roots)
            hint = "`apt-get install dataset-fashion-mnist`, or put " if name == "fashion-mnist" else "put "
            raise BenchError(
                f"{name} not found in {where} and download failed ({exc}; offline?): {hint}"
                f"{', '.join(s + '.gz' for s in _IDX_FILES.values())} in --data-dir (or $BENCH_DATA)") from None
        files = _find_idx(folder)
        if files is None:
            fail(f"{name}: download into {folder} did not produce the IDX files; delete {folder} and retry")
    images = _read_idx(files["train_x"], 3)
    labels = _read_idx(files["train_y"], 1)
    test_images = _read_idx(files["test_x"], 3)
    test_labels = _read_idx(files["test_y"], 1)
    for x, y, kind in ((images, labels, "train"), (test_images, test_labels, "t10k")):
        if len(x) != len(y):
            fail(f"{name}: {kind} images ({len(x)}) and labels ({len(y)}) differ in count in "
                 f"{files['train_x'].parent}; replace the files")
        if len(y) and int(y.max()) > 9:
            fail(f"{name}: labels above 9 in {files[kind.replace('t10k', 'test') + '_y']}; replace the file")
    return images.unsqueeze(1), labels.long(), test_images.unsqueeze(1), test_labels.long(), \
        str(files["train_x"].parent)


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (gzipped when its name ends in .gz) as a uint8 tensor."""
    return _read_idx(Path(path), None)


def _read_idx(path: Path, ndim: int | None) -> torch.Tensor:
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            data = bytearray(fh.read())
    except (OSError, EOFError, ValueError) as exc:
        raise BenchError(f"cannot read {path}: {_one_line(exc)}; replace the file") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        fail(f"{path} is not an IDX file of unsigned bytes; replace it")
    nd = data[3]
    if ndim is not None and nd != ndim:
        fail(f"{path} has {nd} dimensions, expected {ndim}; is it the right file?")
    head = 4 + 4 * nd
    if len(data) < head:
        fail(f"{path} is truncated; replace it")
    dims = struct.unpack(f">{nd}I", bytes(data[4:head]))
    count = math.prod(dims)
    if len(data) != head + count:
        fail(f"{path} holds {len(data) - head} bytes of data, expected {count} for shape {dims}; replace it")
    return torch.frombuffer(data, dtype=torch.uint8, offset=head, count=count).view(*dims)


# --- CIFAR


def _load_cifar(name: str, data_dir):
    spec = _CIFAR[name]
    roots, dest = _search_roots(name, data_dir)
    folder = None
    for root in roots:
        for cand in (root / spec["folder"], root / name / spec["folder"]):
            if all((cand / f).is_file() for f in spec["train"] + spec["test"] + [spec["meta"]]):
                folder = cand
                break
        if folder:
            break
    if folder is None:
        def fetch(tmp: Path) -> list[Path]:
            import torchvision.datasets as tvd
            getattr(tvd, spec["tv"])(root=str(tmp), train=True, download=True)
            return [tmp / spec["folder"]]
        try:
            folder = _download(name, dest, fetch) / spec["folder"]
        except _DownloadFailed as exc:
            where = ", ".join(str(r) for r in roots)
            raise BenchError(
                f"{name} not found in {where} and download failed ({exc}; offline?): put the extracted "
                f"`{spec['folder']}` folder in --data-dir (or $BENCH_DATA), e.g. {dest / spec['folder']}") from None
    meta = _unpickle(folder / spec["meta"])
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[spec["names"]]]

    def read(files):
        xs, ys = [], []
        for f in files:
            d = _unpickle(folder / f)
            try:
                xs.append(torch.as_tensor(d[b"data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
                ys.append(torch.as_tensor(d[spec["labels"]], dtype=torch.int64))
            except (KeyError, RuntimeError, TypeError, ValueError) as exc:
                raise BenchError(f"{folder / f} is not a {name} batch ({_one_line(exc)}); replace it") from None
        return torch.cat(xs), torch.cat(ys)

    train_x, train_y = read(spec["train"])
    test_x, test_y = read(spec["test"])
    return train_x, train_y, test_x, test_y, classes, str(folder)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except Exception as exc:  # noqa: BLE001 - a broken file, explained in one line
        raise BenchError(f"cannot read {path}: {_one_line(exc)}; replace it") from None


# --------------------------------------------------------------------------------------------------
# synthetic


def _synthetic_options(arg: str) -> dict:
    opts = dict(_SYNTHETIC_DEFAULTS)
    for item in filter(None, (p.strip() for p in arg.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if key not in opts:
            choices("synthetic option", key, _SYNTHETIC_DEFAULTS)
        if not eq:
            fail(f"synthetic option {key!r} needs a value, e.g. synthetic:{key}={_SYNTHETIC_DEFAULTS[key]}")
        try:
            opts[key] = type(_SYNTHETIC_DEFAULTS[key])(value.strip())
        except ValueError:
            raise BenchError(f"synthetic option {key}={value!r} is not a {type(_SYNTHETIC_DEFAULTS[key]).__name__}") from None
    if opts["classes"] < 2:
        fail(f"synthetic classes must be >= 2, got {opts['classes']}")
    if opts["channels"] not in (1, 3):
        fail(f"synthetic channels must be 1 or 3, got {opts['channels']}")
    if opts["size"] < 2 * opts["classes"]:
        fail(f"synthetic size must be >= 2 * classes = {2 * opts['classes']}, got {opts['size']}")
    if opts["test"] < 1:
        fail(f"synthetic test must be >= 1, got {opts['test']}")
    if not 0.0 <= opts["noise"] <= 100.0:
        fail(f"synthetic noise must be in [0, 100], got {opts['noise']}")
    return opts


def make_synthetic(image_size: int = 32, classes: int = 10, channels: int = 1, size: int = 2000,
                   test: int = 500, noise: float = 1.0):
    """Generate (train_x, train_y, test_x, test_y, class names); deterministic given the arguments."""
    s = image_size
    m = max(1, s // 4)  # largest shift in pixels
    canvas = s + 2 * m
    g = torch.Generator().manual_seed(20240611)
    low = torch.randn(classes, channels, 8, 8, generator=g)
    patterns = F.interpolate(low, size=(canvas, canvas), mode="bicubic", align_corners=False)
    patterns = patterns - patterns.mean(dim=(1, 2, 3), keepdim=True)
    patterns = patterns / patterns.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    flat = patterns.reshape(classes, channels, canvas * canvas)

    def draw(n: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        y = (torch.arange(n) % classes)[torch.randperm(n, generator=gen)]
        x = torch.empty((n, channels, s, s), dtype=torch.uint8)
        ar = torch.arange(s)
        for lo in range(0, n, 1024):
            yy = y[lo:lo + 1024]
            b = len(yy)
            off = torch.randint(0, 2 * m + 1, (b, 2), generator=gen)
            idx = ((ar + off[:, :1])[:, :, None] * canvas + (ar + off[:, 1:])[:, None, :])
            img = flat[yy].gather(2, idx.view(b, 1, s * s).expand(b, channels, s * s)).view(b, channels, s, s)
            contrast = 0.6 + 0.8 * torch.rand(b, 1, 1, 1, generator=gen)
            img = contrast * img + noise * torch.randn(b, channels, s, s, generator=gen)
            x[lo:lo + b] = (128.0 + 40.0 * img).round_().clamp_(0, 255).to(torch.uint8)
        return x, y

    train_x, train_y = draw(size, 1)
    test_x, test_y = draw(test, 2)
    return train_x, train_y, test_x, test_y, [f"class{k}" for k in range(classes)]


# --------------------------------------------------------------------------------------------------
# imagefolder


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files (recursively, hidden files and folders skipped)."""
    out = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        files = []
        for dirpath, dirnames, filenames in os.walk(entry, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
        out[entry.name] = files
    return out


def _load_imagefolder(path: str, image_size: int):
    root = Path(path).expanduser()
    if not root.exists():
        fail(f"imagefolder path {root} does not exist; give an existing folder of class folders")
    if not root.is_dir():
        fail(f"imagefolder path {root} is not a folder; give a folder of class folders")
    root = root.resolve()
    if (root / "train").is_dir():
        layout = "train/ folders"
        group_dirs = {g: root / g for g in PARTS if (root / g).is_dir()}
    else:
        layout = "single tree"
        group_dirs = {"train": root}

    groups_files: dict[str, dict[str, list[Path]]] = {}
    for g, d in group_dirs.items():
        per_class = _class_files(d)
        if not per_class:
            stray = [p.name for p in d.iterdir() if p.is_file() and not p.name.startswith(".")]
            extra = f" (it holds files like {stray[0]!r} directly)" if stray else ""
            fail(f"no class folders in {d}{extra}; expected {d}/<class>/<image> or {root}/train/<class>/<image>")
        for cls, files in per_class.items():
            if not files:
                fail(f"class folder {d / cls} has no images; add some or remove the folder")
        groups_files[g] = per_class
    classes = list(groups_files["train"])
    if len(classes) < 2:
        fail(f"{group_dirs['train']} has only one class folder ({classes[0]!r}); a classifier needs at least two")
    for g in ("val", "test"):
        if g in groups_files and list(groups_files[g]) != classes:
            got = set(groups_files[g])
            missing, extra = sorted(set(classes) - got), sorted(got - set(classes))
            fail(f"{group_dirs[g]} has different class folders from {group_dirs['train']}: "
                 f"missing {missing}, extra {extra}; make the class folders match")

    # Cache key: everything that decides the decoded tensors.
    h = hashlib.sha256(f"v{_CACHE_FORMAT}|{root}|{image_size}".encode())
    listing = []
    for g, per_class in groups_files.items():
        for cls, files in per_class.items():
            for f in files:
                st = f.stat()
                listing.append((g, cls, f))
                h.update(f"|{g}|{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    cache_file = cache_root() / "imagefolder" / f"{h.hexdigest()[:24]}.pt"
    info = {"path": str(root), "layout": layout, "cache_file": str(cache_file), "n_files": len(listing)}

    cached = _read_cache(cache_file, list(groups_files), classes)
    if cached is not None:
        groups, mode = cached
        info.update(cache="hit", mode=mode)
        return groups, classes, info

    mode = _choose_mode([f for _, _, f in listing])
    channels = 1 if mode == "L" else 3
    groups = {}
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for g, per_class in groups_files.items():
            files = [(f, k) for k, cls in enumerate(classes) for f in per_class[cls]]
            x = torch.empty((len(files), channels, image_size, image_size), dtype=torch.uint8)
            y = torch.tensor([k for _, k in files], dtype=torch.int64)

            decoded = pool.map(lambda item: decode_image(item[0], mode, image_size), files)
            for i, img in enumerate(decoded):
                x[i] = img
            groups[g] = (x, y)
    _write_cache(cache_file, groups, classes, mode)
    info.update(cache="miss", mode=mode)
    return groups, classes, info


def _choose_mode(files: list[Path]) -> str:
    from PIL import Image, UnidentifiedImageError
    grey = True
    for f in files:
        try:
            with Image.open(f) as img:
                m = img.mode
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise BenchError(f"cannot read image {f}: {_one_line(exc)}; remove or replace the file") from None
        if m not in _GREY_MODES:
            grey = False
    return "L" if grey else "RGB"


def decode_image(path: Path, mode: str, size: int) -> torch.Tensor:
    from PIL import Image
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            w, h = img.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
            data = bytearray(img.tobytes())
    except Exception as exc:  # noqa: BLE001 - any decoding failure names the file
        raise BenchError(f"cannot decode image {path}: {_one_line(exc)}; remove or replace the file") from None
    c = 1 if mode == "L" else 3
    return torch.frombuffer(data, dtype=torch.uint8).view(size, size, c).permute(2, 0, 1)


def _read_cache(path: Path, group_names: list[str], classes: list[str]):
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if obj.get("format") != _CACHE_FORMAT or obj.get("classes") != classes:
            return None
        groups = {g: (obj["groups"][g]["x"], obj["groups"][g]["y"]) for g in group_names}
        if any(x.dtype != torch.uint8 or len(x) != len(y) for x, y in groups.values()):
            return None
        return groups, obj["mode"]
    except Exception:  # noqa: BLE001 - a damaged cache is simply rebuilt
        return None


def _write_cache(path: Path, groups, classes: list[str], mode: str) -> None:
    obj = {"format": _CACHE_FORMAT, "classes": classes, "mode": mode,
           "groups": {g: {"x": x, "y": y} for g, (x, y) in groups.items()}}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not write the imagefolder cache {path}: {exc}", stacklevel=3)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
