"""Write a generated, learnable JPEG tree in ImageNet layout: for the scale studies' CPU budgets and the
streaming benchmark, where no real image folder is at hand. As a dataset, `synthetic-images[:options]`
(images, classes, size=WxH, quality) is such a tree written once under the cache root.

    python -m bench.data.generate /tmp/tree --images 20000 --classes 10 --size 400x350

Each class is a fixed random low-frequency colour pattern; each image is that pattern seen through a
random zoom (0.5x to 1x of the canvas, at a random place) plus noise, at the given size (each side
varied by up to -20 % so that aspect ratios differ, as in real photos), saved as JPEG. 10 % of the
images (at least one per class) go to val/. The tree is fixed by its arguments.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import BenchError, Parser, cli
from bench.store_files import locked

CANVAS = 96  # the class pattern's own resolution before zoom and resize


def _patterns(classes: int) -> np.ndarray:
    """uint8 [classes, CANVAS, CANVAS, 3]: smooth random colour fields, one a class."""
    g = torch.Generator().manual_seed(1406)
    low = torch.randn(classes, 3, 6, 6, generator=g)
    pat = F.interpolate(low, size=(CANVAS, CANVAS), mode="bicubic", align_corners=False)
    pat = (pat - pat.mean(dim=(1, 2, 3), keepdim=True)) / pat.std(dim=(1, 2, 3), keepdim=True)
    return (128 + 45 * pat).clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def _write_one(args) -> None:
    # numpy and PIL only: torch's thread pool does not survive the fork into these workers.
    from PIL import Image

    path, pattern, seed, width, height, quality = args
    rng = np.random.default_rng(seed)
    w = int(width * rng.uniform(0.8, 1.0))
    h = int(height * rng.uniform(0.8, 1.0))
    side = max(8, int(CANVAS * rng.uniform(0.5, 1.0)))
    top, left = rng.integers(0, CANVAS - side + 1, 2)
    view = Image.fromarray(pattern[top : top + side, left : left + side]).resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(view, dtype=np.float32) + rng.normal(0, 12, (h, w, 3))
    Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8)).save(path, "JPEG", quality=quality)


def make_tree(
    root: str | Path,
    *,
    images: int = 2000,
    classes: int = 10,
    size: tuple[int, int] = (400, 350),
    quality: int = 90,
    workers: int | None = None,
) -> Path:
    """Write root/train/<class>/*.jpg and root/val/<class>/*.jpg; returns root. Existing files are kept."""
    if classes < 2 or images < 2 * classes:
        raise BenchError(f"a tree needs >= 2 classes and >= 2 images a class, got {classes} classes, {images} images")
    if min(size) < 8 or quality < 1 or quality > 100:
        raise BenchError(f"size must be >= 8 px and quality in 1..100, got {size} and {quality}")
    root = Path(root)
    patterns = _patterns(classes)
    per_class = images // classes
    n_val = max(1, per_class // 10)
    jobs = []
    for k in range(classes):
        for i in range(per_class):
            part = "val" if i < n_val else "train"
            folder = root / part / f"class{k:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{i:06d}.jpg"
            if not path.exists():
                jobs.append((path, patterns[k], k * 1_000_003 + i, size[0], size[1], quality))
    if workers == 1:
        for job in jobs:
            _write_one(job)
    else:
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            list(pool.map(_write_one, jobs, chunksize=64))
    return root


OPTIONS = {"images": 2000, "classes": 10, "size": "64x56", "quality": 90}


def options(arg: str) -> dict:
    """Parse `images=3000,size=64x56` (the `synthetic-images:` dataset's options) over OPTIONS."""
    from bench.errors import choices

    opts = dict(OPTIONS)
    for item in filter(None, (p.strip() for p in arg.split(","))):
        key, _, value = item.partition("=")
        if key.strip() not in opts:
            choices("synthetic-images option", key.strip(), OPTIONS)
        opts[key.strip()] = value.strip()
    try:
        w, h = (int(v) for v in str(opts["size"]).lower().split("x"))
        parsed = {
            "images": int(opts["images"]),
            "classes": int(opts["classes"]),
            "size": (w, h),
            "quality": int(opts["quality"]),
        }
    except ValueError:
        raise BenchError(f"synthetic-images options are whole numbers and size=WIDTHxHEIGHT, got {arg!r}") from None
    return parsed


def cached_tree(arg: str) -> Path:
    """The generated tree for `synthetic-images:<arg>`, written under the cache root on first use."""
    from bench.data.files import cache_root

    opts = options(arg)
    w, h = opts["size"]
    root = cache_root() / "synthetic-images" / f"{opts['images']}-{opts['classes']}-{w}x{h}-q{opts['quality']}"
    done = root / ".complete"
    if not done.is_file():
        with locked(root.with_name(root.name + ".lock")):  # workers started together write it once
            if not done.is_file():
                make_tree(root, **opts)
                done.touch()
    return root


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m bench.data.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="folder to write (outside the repository, e.g. /tmp/tree)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", default="400x350", help="WIDTHxHEIGHT (default 400x350)")
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise BenchError(f"--size must be WIDTHxHEIGHT, e.g. 400x350, got {args.size!r}") from None
    root = make_tree(args.root, images=args.images, classes=args.classes, size=(w, h), quality=args.quality)
    print(root)
    return 0


if __name__ == "__main__":
    cli(main)
