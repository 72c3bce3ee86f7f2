"""Splitting a pool of images into train / val / test, and batching them with augmentation on the device.

`Splits` holds train / val / test images as uint8 [N, C, H, W] and int64 labels, all on the device, plus
the per-channel mean and std of the training split and an `info` dict that a run records.
`Splits.batches(...)` slices, augments (random crop with 4 px zero padding, random horizontal flip) and
normalises whole batches on the device; every random draw comes from the caller's torch.Generator.

The official training set (or image-folder pool) is permuted with `split_seed`; `subset` keeps the first
`subset` images of that permutation; `val_fraction` of those (floor, at least 1 when > 0) become
validation. The official test set is used whole.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bench.errors import BenchError, choices

PARTS = ("train", "val", "test")
CROP_PAD = 4


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

    @property
    def test_scale(self) -> None:  # images are held at the network's size: no rescaling before the crop
        return None

    def __repr__(self) -> str:
        i = self.info
        return (
            f"Splits({i.get('dataset')!r}, train={i.get('n_train')}, val={i.get('n_val')}, "
            f"test={i.get('n_test')}, shape={tuple(self.train_x.shape[1:])}, "
            f"classes={self.num_classes}, device={self.device})"
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def examples(self, count: int) -> torch.Tensor:
        """The first `count` test images (uint8, CPU)."""
        return self.test_x[:count].cpu()

    def labels(self, part: str) -> torch.Tensor:
        return self.part(part)[1]

    def part(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        if part not in PARTS:
            choices("split part", part, PARTS)
        return getattr(self, f"{part}_x"), getattr(self, f"{part}_y")

    def num_batches(self, part: str, batch_size: int, drop_last: bool = False) -> int:
        check_batch_size(batch_size)
        n = len(self.part(part)[1])
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(
        self,
        part: str,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        augment: bool = False,
        shuffle: bool = False,
        drop_last: bool = False,
        channels_last: bool = False,
        start_batch: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (float32 normalised images [B, C, H, W], int64 labels [B]) on the data's device.

        `shard` = (rank, world): yield only that rank's rows of each batch (see `share`).

        All randomness of one pass (the order, the crop offsets, the flips) is drawn from `generator` before
        the first batch is yielded, so the generator's state after the call does not depend on how many
        batches are consumed, and `start_batch=k` resumes a pass at its k-th batch with exactly the batches
        the full pass would have produced (give it the generator state saved at the start of the pass).
        """
        x, y = self.part(part)
        check_batch_size(batch_size)
        if start_batch < 0:
            raise BenchError(f"start_batch must be >= 0, got {start_batch}")
        n = len(y)
        dev = x.device
        gdev = generator.device if generator is not None else dev

        # Draw everything for the pass up front, on the generator's device, then move it to the data.
        order = torch.randperm(n, generator=generator, device=gdev).to(dev) if shuffle else None
        if augment:
            offsets = torch.randint(0, 2 * CROP_PAD + 1, (n, 2), generator=generator, device=gdev).to(dev)
            flips = torch.randint(0, 2, (n,), generator=generator, device=gdev).to(dev).bool()

        normalise = Normaliser(self.mean, self.std, dev, channels_last)

        stop = n - n % batch_size if drop_last else n
        for lo in range(start_batch * batch_size, stop, batch_size):
            lo, hi = share(lo, min(lo + batch_size, n), shard)
            if lo == hi:  # a last batch with fewer rows than ranks leaves some none
                continue
            if order is None:
                xb, yb = x[lo:hi], y[lo:hi]
            else:
                idx = order[lo:hi]
                xb, yb = x[idx], y[idx]
            if augment:
                sel = slice(lo, hi) if order is None else order[lo:hi]
                xb = crop_flip(xb, offsets[sel], flips[sel])
            yield normalise(xb), yb


class Normaliser:
    """uint8 images [B, C, H, W] -> float32 (x / 255 - mean) / std, per channel, on the device."""

    def __init__(self, mean, std, device: torch.device, channels_last: bool = False):
        c = len(mean)
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32, device=device).view(1, c, 1, 1)
        self.shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32, device=device).view(
            1, c, 1, 1
        )
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = x.to(self.scale.device, non_blocking=True)
        if self.channels_last and out.ndim == 4:  # on the uint8 batch: a quarter of the float copy
            out = out.contiguous(memory_format=torch.channels_last)
        return out.float().mul_(self.scale).sub_(self.shift)  # .float() keeps the memory format


def share(lo: int, hi: int, shard: tuple[int, int]) -> tuple[int, int]:
    """Rank `rank`'s share [lo', hi') of the batch rows [lo, hi), for shard = (rank, world): the ranks'
    shares, in rank order, make up the whole batch. Equal when `world` divides the batch (training
    batches always; a last evaluation batch may leave some ranks one row more)."""
    rank, world = shard
    n = hi - lo
    return lo + rank * n // world, lo + (rank + 1) * n // world


def check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise BenchError(f"batch size must be a positive integer, got {batch_size!r}")


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
    padded[:, :, pad : pad + h, pad : pad + w] = x
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    cols = torch.where(flips[:, None], w - 1 - ar_w, ar_w) + offsets[:, 1:2]  # [B, W]
    rows = ar_h + offsets[:, 0:1]  # [B, H]
    flat = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.view(b, c, hp * wp).gather(2, flat).view(b, c, h, w)


INFO_FIRST = ("dataset", "source", "split_seed", "subset", "val_fraction", "n_train", "n_val", "n_test", "image_size")


def to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    if dev.type == "cpu":
        return t
    if dev.type == "cuda":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


def split(pool: int, subset: int | None, val_fraction: float, test_fraction: float, seed: int, name: str):
    """Seeded permutation of the pool -> (train, val, test-or-None) index tensors (CPU, int64)."""
    perm = torch.randperm(pool, generator=torch.Generator().manual_seed(seed))
    if subset is not None:
        perm = perm[:subset]
    n = len(perm)
    n_test = max(1, math.floor(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, math.floor(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise BenchError(
            f"{name}: {n} images leave nothing to train on after taking {n_val} for validation"
            + (f" and {n_test} for test" if n_test else "")
            + "; lower val_fraction or raise subset"
        )
    test_idx = perm[:n_test] if n_test else None
    val_idx = perm[n_test : n_test + n_val]
    train_idx = perm[n_test + n_val :]
    return train_idx, val_idx, test_idx


def split_hash(*indices: torch.Tensor | None) -> str:
    """A short fingerprint of which pool images went to which part, in which order."""
    h = hashlib.sha256()
    for idx in indices:
        if idx is not None:
            h.update(idx.numpy().astype("<i8").tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std on the 0..1 scale of uint8 images [N, C, H, W], via histograms."""
    return stats_of_histogram(channel_histogram(x))


def channel_histogram(x: torch.Tensor) -> torch.Tensor:
    """Counts of each uint8 value per channel of images [N, C, H, W]: [C, 256]. Counts add up, so a
    sample too large to hold at once can be counted batch by batch."""
    c = x.shape[1]
    counts = torch.zeros(c, 256, dtype=torch.float64)
    for lo in range(0, len(x), 8192):
        chunk = x[lo : lo + 8192]
        for ch in range(c):
            counts[ch] += torch.bincount(chunk[:, ch].reshape(-1), minlength=256).double().cpu()
    return counts


def stats_of_histogram(counts: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0..1 scale from `channel_histogram` counts."""
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
    return (_resize(train_x, image_size), _resize(test_x, image_size), f"bilinear antialias {native}->{image_size}")


def _resize(x: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for lo in range(0, len(x), chunk):
        part = F.interpolate(
            x[lo : lo + chunk].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out[lo : lo + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def folder_sources(info: dict, has_val: bool, has_test: bool) -> float:
    """Record where an image folder's val and test sets come from; returns the test fraction to carve."""
    if has_test:
        info["test_source"] = "test/"
    elif has_val:
        info["test_source"] = "val/ (no test/ folder: the test set is the validation set)"
    else:
        info["test_source"] = "carved from the pool (10%, split_seed)"
    info["val_source"] = "val/" if has_val else "carved from the pool (val_fraction, split_seed)"
    return 0.0 if has_test or has_val else 0.1


def check_subset(subset: int | None, pool_size: int, num_classes: int, name: str) -> None:
    if subset is None:
        return
    if subset < 2 * num_classes:
        raise BenchError(f"subset {subset} is too small for {num_classes} classes: use at least {2 * num_classes}")
    if subset > pool_size:
        raise BenchError(
            f"subset {subset} is larger than the {pool_size} training images of {name}: "
            f"use at most {pool_size}, or no subset"
        )


def ordered(info: dict) -> dict:
    """The info dict with the keys a person looks for first."""

    def key(k: str) -> tuple[int, str]:
        return (INFO_FIRST.index(k), "") if k in INFO_FIRST else (len(INFO_FIRST), k)

    return {k: info[k] for k in sorted(info, key=key)}
