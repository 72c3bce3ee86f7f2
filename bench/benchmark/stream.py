"""Streamed image-folder loading against the tutorials' loader, and end-to-end training on a streamed tree.

    python -m bench.benchmark.stream /tmp/tree --generate 20000     # write the tree first if missing
    python -m bench.benchmark.stream /tmp/tree --images 1000 --rounds 8 --train-subset 500 --train-rounds 6

Loaders (each in its own process, `--rounds` rounds in alternating order, A B, B A, ..., so that both see
the same machine load; 6 rounds or more give each ratio a 95 % interval):
  tutorials  torchvision ImageFolder + PIL RandomResizedCrop(224) / RandomHorizontalFlip / ToTensor /
             Normalize, DataLoader(shuffle, workers, batch)
  streamed   bench.data's streamed holder: torchvision.io decoding in the workers, S drawn per image from
             [256, 512], random 224 crop and flip on uint8, normalised in the main process
Both yield normalised float batches [B, 3, 224, 224] on the CPU. Images/s counts `--images` images after
two warm-up batches; memory is the peak over the loader's process tree (main + workers), sampled every
50 ms: the sum of RSS, and the sum of PSS (shared pages split between the processes that share them).

With `--device cuda` every loader's batches end on the GPU (the tutorials' and the streamed loader's
are copied there from pinned memory), and a third loader joins them:
  streamed-gpu  the workers only read file bytes; each batch is decoded on the GPU in one nvjpeg call
                (`decode_jpeg(..., device='cuda')`) and cropped there
with the peak GPU memory of each, and the agreement of GPU-decoded views with CPU-decoded views of the
same batch (nvjpeg and libjpeg may round differently; the crop and flip draws are the same).

End to end (`--train-subset N`): `--train-epochs` epochs of VGG-A (width `--width`, 224 px crops)
through bench.engine.train.fit on N training images of the tree, streamed, held in memory (the same batches),
and on the in-memory path (decoded once at 224 px, pad-4 crops), `--train-rounds` rounds in alternating
order; the last epoch's images/s is reported. Every speed ratio is the median of the rounds' paired
ratios with its interval and the machine's load (bench.speed_ratio); bench.benchmark.stream_report
prints the Markdown report on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.errors import BenchError, Parser, cli

BATCH = 128
WORKERS = 2


def _tutorial_batches(root: Path, batch: int, workers: int, pin: bool = False):
    import torch
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
        pin_memory=pin,
    )
    yield from loader


def _streamed_splits(root: Path, workers: int, device: str, holder: str):
    from bench import data
    from bench.config import RunConfig

    config = RunConfig(
        dataset=f"imagefolder:{root}",
        image_size=224,
        train_scale="256,512",
        data_holder=holder,
        loader_workers=workers,
        device=device,
    )
    return data.open_run(config, device=device)


def _loader(kind: str, root: Path, batch: int, workers: int, device: str):
    import torch

    if kind == "tutorials":
        return _tutorial_batches(root, batch, workers, pin=device != "cpu")
    splits = _streamed_splits(root, workers, device, "stream-gpu" if kind == "streamed-gpu" else "stream")
    return splits.batches("train", batch, generator=torch.Generator().manual_seed(0), augment=True, shuffle=True)


def measure_one(kind: str, root: Path, images: int, batch: int, workers: int, device: str = "cpu") -> dict:
    """In this process: images/s of one loader over `images` images after two warm-up batches, each batch
    on `device` (copied there when the loader made it elsewhere)."""
    import torch

    batches = _loader(kind, root, batch, workers, device)
    for _ in range(2):
        next(batches)[0].to(device, non_blocking=True)
    if device != "cpu":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seen, began = 0, time.perf_counter()
    for x, _ in batches:
        x = x.to(device, non_blocking=True)
        seen += len(x)
        if seen >= images:
            break
    if device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    gpu_peak = torch.cuda.max_memory_allocated() if device != "cpu" else None
    return {"kind": kind, "images": seen, "seconds": seconds, "images_per_s": seen / seconds, "peak_gpu": gpu_peak}


def agreement(root: Path, device: str, batch: int) -> dict:
    """How far the GPU-decoded views of the first training batch are from the CPU-decoded ones, in uint8
    levels (the same draws: only the decoder and the resize kernels differ)."""
    import torch

    first = {}
    for holder in ("stream", "stream-gpu"):
        splits = _streamed_splits(root, 0, device, holder)
        first[holder] = next(
            iter(splits.batches("train", batch, generator=torch.Generator().manual_seed(0), augment=True, shuffle=True))
        )
    std = torch.tensor(splits.std, device=device).view(1, -1, 1, 1)
    levels = ((first["stream"][0] - first["stream-gpu"][0]).abs() * std * 255).flatten()
    return {
        "images": batch,
        "labels_equal": bool(torch.equal(first["stream"][1], first["stream-gpu"][1])),
        "mean_levels": levels.mean().item(),
        "p99_levels": levels.float().quantile(0.99).item(),
        "max_levels": levels.max().item(),
    }


def _tree_memory(pid: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over `pid` and its descendants."""
    pids, frontier = [pid], [pid]
    while frontier:
        nxt = []
        for p in frontier:
            try:
                for task in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{task}/children") as fh:
                        nxt += [int(c) for c in fh.read().split()]
            except OSError:
                pass
        pids += nxt
        frontier = nxt
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def measure(kind: str, root: Path, images: int, batch: int, workers: int, device: str) -> dict:
    """Run one loader in a child process and watch its process tree's memory."""
    cmd = [
        sys.executable,
        "-m",
        "bench.benchmark.stream",
        str(root),
        "--one",
        kind,
        "--images",
        str(images),
        "--batch",
        str(batch),
        "--workers",
        str(workers),
        "--device",
        device,
    ]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = [0, 0]

    def watch():
        while child.poll() is None:
            rss, pss = _tree_memory(child.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = child.communicate()
    watcher.join()
    if child.returncode != 0:
        raise BenchError(f"the {kind} loader failed (exit {child.returncode}); run {' '.join(cmd)} to see why")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(peak_rss=peak[0], peak_pss=peak[1], workers=workers)
    return result


def end_to_end(
    root: Path, subset: int, device: str, width: float, epochs: int, workers: int, count: int = 1
) -> list[dict]:
    """`count` rounds of `epochs` epochs of VGG-A through bench.train on `subset` images, in alternating
    order: streamed, held, in memory."""
    from bench.config import RunConfig
    from bench.engine.train import fit
    from bench.speed_ratio import in_turns

    base = dict(
        dataset=f"imagefolder:{root}",
        image_size=224,
        model="vgg-a",
        width=width,
        head="small",
        epochs=epochs,
        batch_size=BATCH,
        subset=subset,
        loader_workers=workers,
        lr=0.01,
        device=device,
    )
    paths = [("streamed, S in [256, 512]", dict(train_scale="256,512", data_holder="stream"))]
    if device != "cpu":
        paths.append(
            ("streamed, decoded on the GPU, S in [256, 512]", dict(train_scale="256,512", data_holder="stream-gpu"))
        )
    paths += [
        ("held in memory, S in [256, 512]", dict(train_scale="256,512", data_holder="memory")),
        ("in-memory path (224 px once, pad-4 crops)", dict(data_holder="memory")),
    ]
    rows = []
    for number in range(1, count + 1):
        for label, extra in in_turns(paths, number):
            began = time.perf_counter()
            result = fit(RunConfig(**base, **extra))
            rows.append(
                {
                    "path": label,
                    "round": number,
                    "train_images_per_s": result.history[-1].images_per_s,
                    "wall_s": time.perf_counter() - began,
                }
            )
            print(f"{label}: {rows[-1]['train_images_per_s']:.1f} train images/s", file=sys.stderr)
    return rows


def _counts(text: str) -> list[int]:
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0:
        raise BenchError(f"--workers takes worker counts >= 0 separated by commas (e.g. 2 or 4,12), got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m bench.benchmark.stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="an ImageNet-layout tree (train/<class>/*.jpg)")
    parser.add_argument("--generate", type=int, default=0, help="first write this many 400x350 JPEGs there if missing")
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--workers", default=str(WORKERS), help="worker counts to measure, e.g. 4,12 (default 2)")
    parser.add_argument("--device", default="cpu", help="where the batches go: cpu (default) or cuda")
    parser.add_argument("--train-subset", type=int, default=0, help="also train end to end on this many images")
    parser.add_argument("--train-epochs", type=int, default=1, help="end to end: epochs (the last one is timed)")
    parser.add_argument("--width", type=float, default=0.0625, help="end to end: VGG-A's width (default 1/16)")
    parser.add_argument("--train-rounds", type=int, default=1, help="end to end: rounds of the data paths")
    parser.add_argument("--one", choices=("tutorials", "streamed", "streamed-gpu"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.one:
        print(json.dumps(measure_one(args.one, root, args.images, args.batch, int(args.workers), args.device)))
        return 0
    from bench.device import resolve_device

    device = resolve_device(args.device)
    if device.type not in ("cpu", "cuda"):
        raise BenchError(f"--device {args.device}: the loaders are measured on cpu or cuda only")
    args.device = str(device)
    counts = _counts(args.workers)
    for flag, value, least in (
        ("--images", args.images, 1),
        ("--rounds", args.rounds, 1),
        ("--batch", args.batch, 1),
        ("--train-subset", args.train_subset, 0),
        ("--train-epochs", args.train_epochs, 1),
        ("--train-rounds", args.train_rounds, 1),
    ):
        if value < least:
            raise BenchError(f"{flag} must be at least {least}, got {value}")
    if args.train_subset:
        from bench.config import RunConfig

        RunConfig(model="vgg-a", width=args.width, epochs=args.train_epochs)  # refused now, not after the loaders
    if args.generate:
        from bench.data.generate import make_tree

        make_tree(root, images=args.generate, classes=100, size=(400, 350), quality=90)
    if not (root / "train").is_dir():
        raise BenchError(f"{root} has no train/ folder: generate one with --generate 20000")
    from bench.benchmark.stream_report import kinds, report
    from bench.speed_ratio import in_turns, load

    load_before = load()
    loaders = []
    for workers in counts:
        for number in range(1, args.rounds + 1):
            for kind in in_turns(kinds(args.device), number):
                loaders.append({"round": number, **measure(kind, root, args.images, args.batch, workers, args.device)})
                print(f"{kind}, {workers} workers: {loaders[-1]['images_per_s']:.1f} images/s", file=sys.stderr)
    checked = agreement(root, args.device, min(args.batch, 64)) if args.device != "cpu" else None
    e2e = (
        end_to_end(root, args.train_subset, args.device, args.width, args.train_epochs, max(counts), args.train_rounds)
        if args.train_subset
        else []
    )
    print(report(root, loaders, checked, e2e, args, counts, [load_before, load()]), end="")
    return 0


if __name__ == "__main__":
    cli(main)
