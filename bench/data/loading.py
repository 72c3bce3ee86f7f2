"""`load(name, ...)`: a dataset by name -> `Splits` on the device (see the package doc for the names)."""

from __future__ import annotations

import os

import torch

from bench.data import cifar, idx, imagefolder, stream, synthetic, tree, views
from bench.data.splits import (
    Splits,
    channel_stats,
    check_subset,
    fit_size,
    folder_sources,
    ordered,
    split,
    split_hash,
    to_device,
)
from bench.data.stream_splits import Scales
from bench.device import resolve_device
from bench.errors import BenchError, choices
from bench.ranges import IMAGE_SIZE

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder:PATH", "synthetic", "synthetic-images")


def check_common(name, image_size, subset, split_seed, val_fraction) -> float:
    """Validate the arguments every source shares; returns val_fraction as a float."""
    if not isinstance(name, str) or not name:
        choices("dataset", name, DATASETS)
    if image_size is not None and (
        not isinstance(image_size, int) or isinstance(image_size, bool) or not IMAGE_SIZE.holds(image_size)
    ):
        raise BenchError(f"image size must be an integer in {IMAGE_SIZE}, got {image_size!r}")
    if subset is not None and (not isinstance(subset, int) or isinstance(subset, bool)):
        raise BenchError(f"subset must be an integer number of images, got {subset!r}")
    if not isinstance(split_seed, int) or isinstance(split_seed, bool):
        raise BenchError(f"split seed must be an integer, got {split_seed!r}")
    try:
        val_fraction = float(val_fraction)
    except (TypeError, ValueError):
        raise BenchError(f"val fraction must be a number in [0, 1), got {val_fraction!r}") from None
    if not 0.0 <= val_fraction < 1.0:  # also refuses NaN
        raise BenchError(f"val fraction must be in [0, 1), got {val_fraction}")
    return val_fraction


def load(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    subset: int | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    device: str | torch.device = "cpu",
) -> Splits:
    """Load a dataset as uint8 tensors on `device`, split into train / val / test (see the package doc)."""
    val_fraction = check_common(name, image_size, subset, split_seed, val_fraction)
    dev = resolve_device(device)
    base, _, arg = name.partition(":")
    base = base.strip().lower()
    info: dict = {"dataset": f"{base}:{arg}" if arg else base}
    pool_x, pool_y, test_x, test_y, classes, source, fixed_val, test_fraction = _read(
        base, arg, name, data_dir, image_size, info
    )

    pool_size = len(pool_y)
    check_subset(subset, pool_size, len(classes), name)
    vf_used = 0.0 if fixed_val is not None else val_fraction
    train_idx, val_idx, test_idx = split(pool_size, subset, vf_used, test_fraction, split_seed, name)

    train_x, train_y = pool_x[train_idx], pool_y[train_idx]
    val_x, val_y = fixed_val if fixed_val is not None else (pool_x[val_idx], pool_y[val_idx])
    if test_idx is not None:
        test_x, test_y = pool_x[test_idx], pool_y[test_idx]
    del pool_x, pool_y

    mean, std = channel_stats(train_x)
    info.update(
        {
            "source": str(source),
            "split_seed": split_seed,
            "subset": subset,
            "val_fraction": vf_used if fixed_val is None else None,
            "test_fraction": test_fraction if test_fraction else None,
            "pool_size": pool_size,
            "n_train": len(train_y),
            "n_val": len(val_y),
            "n_test": len(test_y),
            "image_size": int(train_x.shape[-1]),
            "in_channels": int(train_x.shape[1]),
            "num_classes": len(classes),
            "split_hash": split_hash(train_idx, val_idx, test_idx),
            "mean": [round(m, 6) for m in mean],
            "std": [round(s, 6) for s in std],
        }
    )
    info = ordered(info)

    tensors = [train_x, train_y.long(), val_x, val_y.long(), test_x, test_y.long()]
    moved: dict[int, torch.Tensor] = {}  # the test set may be the val set itself: move it once
    for t in tensors:
        if id(t) not in moved:
            moved[id(t)] = to_device(t.contiguous(), dev)
    tensors = [moved[id(t)] for t in tensors]
    return Splits(
        *tensors,
        classes=list(classes),
        mean=mean,
        std=std,
        info=info,
        train_index=train_idx,
        val_index=val_idx if fixed_val is None else None,
    )


def _read(base: str, arg: str, name: str, data_dir, image_size: int | None, info: dict):
    """The named source's pool (to split), its own test set, classes and where it came from; an image
    folder's ready-made val/ as `fixed_val`, and the fraction of the pool to carve as test."""
    test_fraction = 0.0
    fixed_val = None  # (x, y) of a ready-made validation set (imagefolder val/)
    if base in idx.CLASSES or base in cifar.SPECS:
        if arg:
            raise BenchError(f"dataset {base!r} takes no options (got {name!r})")
        if base in idx.CLASSES:
            pool_x, pool_y, test_x, test_y, source = idx.load(base, data_dir)
            classes, info["native_size"] = list(idx.CLASSES[base]), idx.NATIVE_SIZE
        else:
            pool_x, pool_y, test_x, test_y, classes, source = cifar.load(base, data_dir)
            info["native_size"] = cifar.NATIVE_SIZE
        pool_x, test_x, info["resize"] = fit_size(pool_x, test_x, info["native_size"], image_size)
    elif base == "synthetic":
        opts = synthetic.options(arg)
        pool_x, pool_y, test_x, test_y, classes = synthetic.make_synthetic(image_size or 32, **opts)
        source = "generated"
        info["options"] = dict(opts)
        info["native_size"] = image_size or 32
    elif base in ("imagefolder", "synthetic-images"):
        from bench.data import generate  # imported late: it is also a command (python -m bench.data.generate)

        folder = arg if base == "imagefolder" else str(generate.cached_tree(arg))
        groups, classes, folder_info = imagefolder.load(folder, image_size or 224)
        info.update(folder_info)
        source = folder_info["path"]
        pool_x, pool_y = groups["train"]
        fixed_val = groups.get("val")
        test_fraction = folder_sources(info, "val" in groups, "test" in groups)
        test_x, test_y = groups.get("test", fixed_val or (None, None))
    else:
        choices("dataset", name, DATASETS)
    return pool_x, pool_y, test_x, test_y, classes, source, fixed_val, test_fraction


def open_run(config, *, data_dir=None, device: str | torch.device = "cpu"):
    """The data of one run (a bench.config.RunConfig): `Splits` in device memory, or for image folders
    under the paper's scale protocol, or too large to hold, `StreamSplits` (see bench.data.stream)."""
    dev = resolve_device(device)
    run_device = resolve_device(config.device)
    if config.data_holder == "stream-gpu" and run_device.type != "cuda":
        raise BenchError(
            f"data_holder 'stream-gpu' decodes JPEGs on a CUDA device, and this run's device is "
            f"{run_device}: use --data-holder stream (decoded in the workers)"
        )
    kind, _, path = config.dataset.partition(":")
    if kind == "synthetic-images":
        from bench.data import generate

        kind, path = "imagefolder", str(generate.cached_tree(path))
    crop = config.image_size or 224
    if kind != "imagefolder":
        return load(
            config.dataset,
            data_dir=data_dir,
            image_size=config.image_size,
            subset=config.subset,
            val_fraction=config.val_fraction,
            split_seed=config.split_seed,
            device=dev,
        )
    if config.train_scale is None and not config.data_holder.startswith("stream"):
        # Today's path (decoded once at the crop size, pad-4 crops) unless it would not fit.
        fits = len(tree.scan(path).all_files()) * 3 * crop * crop <= stream.MEMORY_FRACTION * stream.physical_memory()
        if config.data_holder == "memory" or fits:
            return load(
                config.dataset,
                data_dir=data_dir,
                image_size=config.image_size,
                subset=config.subset,
                val_fraction=config.val_fraction,
                split_seed=config.split_seed,
                device=dev,
            )
    train = config.scale_range or (views.PAPER_CROP, views.PAPER_CROP)
    test = config.test_scale_list or (views.PAPER_CROP,)
    splits = stream.open_folder(
        path,
        crop=crop,
        scales=Scales.at_crop(crop, train, test),
        holder=config.data_holder,
        workers=config.loader_workers,
        subset=config.subset,
        val_fraction=config.val_fraction,
        split_seed=config.split_seed,
        device=dev,
    )
    splits.info["dataset"] = config.dataset
    return splits
