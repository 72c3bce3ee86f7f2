"""Streamed image-folder loading against the tutorials' loader, and end-to-end training on a streamed tree.

    python -m bench.stream_benchmark /tmp/tree --generate 20000     # write the tree first if missing
    python -m bench.stream_benchmark /tmp/tree --images 6000 --rounds 2 --train-subset 2000

Loaders (each in its own process, alternated `--rounds` times, so that both see the same machine load):
  tutorials  torchvision ImageFolder + PIL RandomResizedCrop(224) / RandomHorizontalFlip / ToTensor /
             Normalize, DataLoader(shuffle, workers, batch)
  streamed   bench.data's streamed holder: torchvision.io decoding in the workers, S drawn per image from
             [256, 512], random 224 crop and flip on uint8, normalised in the main process
Both yield normalised float batches [B, 3, 224, 224] on the CPU. Images/s counts `--images` images after
two warm-up batches; memory is the peak over the loader's process tree (main + workers), sampled every
50 ms: the sum of RSS, and the sum of PSS (shared pages split between the processes that share them).

End to end (`--train-subset N`): one epoch of a narrow VGG-A (width 1/16, 224 px crops) through
bench.train.fit on N training images of the tree, streamed, held in memory (the same batches), and on
the in-memory path (decoded once at 224 px, pad-4 crops). Prints a Markdown report on stdout.
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


def _tutorial_batches(root: Path, batch: int, workers: int):
    import torch
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0))
    yield from loader


def _streamed_batches(root: Path, batch: int, workers: int):
    import torch

    from bench import data
    from bench.config import RunConfig

    config = RunConfig(dataset=f"imagefolder:{root}", image_size=224, train_scale="256,512", data_holder="stream",
                       loader_workers=workers)
    splits = data.open_run(config)
    yield from splits.batches("train", batch, generator=torch.Generator().manual_seed(0), augment=True,
                              shuffle=True)


def measure_one(kind: str, root: Path, images: int, batch: int, workers: int) -> dict:
    """In this process: images/s of one loader over `images` images after two warm-up batches."""
    batches = (_tutorial_batches if kind == "tutorials" else _streamed_batches)(root, batch, workers)
    for _ in range(2):
        next(batches)
    seen, began = 0, time.perf_counter()
    for x, _ in batches:
        seen += len(x)
        if seen >= images:
            break
    seconds = time.perf_counter() - began
    return {"kind": kind, "images": seen, "seconds": seconds, "images_per_s": seen / seconds}


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


def measure(kind: str, root: Path, images: int, batch: int, workers: int) -> dict:
    """Run one loader in a child process and watch its process tree's memory."""
    cmd = [sys.executable, "-m", "bench.stream_benchmark", str(root), "--one", kind, "--images", str(images),
           "--batch", str(batch), "--workers", str(workers)]
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
    result.update(peak_rss=peak[0], peak_pss=peak[1])
    return result


def end_to_end(root: Path, subset: int) -> list[dict]:
    """One epoch of a narrow VGG-A through bench.train on `subset` images: streamed, held, in memory."""
    from bench.config import RunConfig
    from bench.train import fit

    base = dict(dataset=f"imagefolder:{root}", image_size=224, model="vgg-a", width=0.0625, head="small",
                epochs=1, batch_size=BATCH, subset=subset, loader_workers=WORKERS, lr=0.01)
    rows = []
    for label, extra in (("streamed, S in [256, 512]", dict(train_scale="256,512", data_holder="stream")),
                         ("held in memory, S in [256, 512]", dict(train_scale="256,512", data_holder="memory")),
                         ("in-memory path (224 px once, pad-4 crops)", dict(data_holder="memory"))):
        began = time.perf_counter()
        result = fit(RunConfig(**base, **extra))
        rows.append({"path": label, "train_images_per_s": result.history[-1].images_per_s,
                     "wall_s": time.perf_counter() - began})
    return rows


def report(root: Path, loaders: list[dict], e2e: list[dict], args, load_before: str, load_after: str) -> str:
    from statistics import median

    from bench import provenance

    def mib(b):
        return f"{b / 2**20:,.0f}"

    stamp = provenance.stamp("cpu")
    lines = ["# Streamed image folders on this CPU", "",
             f"- machine: {stamp['host']}, {os.cpu_count()} CPUs, {stamp['device']}; torch {stamp['torch']}",
             f"- commit: {stamp['commit']}",
             f"- command: `python -m bench.stream_benchmark {' '.join(sys.argv[1:])}`",
             f"- tree: {root} ({sum(1 for _ in (root / 'train').rglob('*.jpg'))} training JPEGs)",
             f"- load (uptime) before: {load_before}; after: {load_after}", "",
             f"## Loaders: batch {args.batch}, {args.workers} workers, {args.images} images a measurement", "",
             "| loader | round | images/s | peak RSS sum (MiB) | peak PSS sum (MiB) |", "|---|---|---|---|---|"]
    for i, r in enumerate(loaders):
        lines.append(f"| {r['kind']} | {i // 2 + 1} | {r['images_per_s']:.1f} | {mib(r['peak_rss'])} | {mib(r['peak_pss'])} |")
    speed = {k: median(r["images_per_s"] for r in loaders if r["kind"] == k) for k in ("tutorials", "streamed")}
    pss = {k: max(r["peak_pss"] for r in loaders if r["kind"] == k) for k in ("tutorials", "streamed")}
    lines += ["", f"Median streamed / tutorials: **{speed['streamed'] / speed['tutorials']:.2f}x** images/s; "
              f"peak PSS {mib(pss['streamed'])} vs {mib(pss['tutorials'])} MiB.", ""]
    if e2e:
        lines += [f"## End to end: one epoch of VGG-A width 1/16 at 224 px, {args.train_subset} images", "",
                  "| data path | train images/s | wall s (incl. loading) |", "|---|---|---|"]
        lines += [f"| {r['path']} | {r['train_images_per_s']:.1f} | {r['wall_s']:.1f} |" for r in e2e]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m bench.stream_benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="an ImageNet-layout tree (train/<class>/*.jpg)")
    parser.add_argument("--generate", type=int, default=0, help="first write this many 400x350 JPEGs there if missing")
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--train-subset", type=int, default=0, help="also train end to end on this many images")
    parser.add_argument("--one", choices=("tutorials", "streamed"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.one:
        print(json.dumps(measure_one(args.one, root, args.images, args.batch, args.workers)))
        return 0
    if args.generate:
        from bench.data.generate import make_tree
        make_tree(root, images=args.generate, classes=100, size=(400, 350), quality=90)
    if not (root / "train").is_dir():
        raise BenchError(f"{root} has no train/ folder: generate one with --generate 20000")
    load_before = os.getloadavg()
    loaders = []
    for _ in range(args.rounds):
        for kind in ("tutorials", "streamed"):
            loaders.append(measure(kind, root, args.images, args.batch, args.workers))
            print(f"{kind}: {loaders[-1]['images_per_s']:.1f} images/s", file=sys.stderr)
    e2e = end_to_end(root, args.train_subset) if args.train_subset else []
    fmt = lambda la: ", ".join(f"{v:.2f}" for v in la)  # noqa: E731
    print(report(root, loaders, e2e, args, fmt(load_before), fmt(os.getloadavg())), end="")
    return 0


if __name__ == "__main__":
    cli(main)
