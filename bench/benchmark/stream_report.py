"""The Markdown report of python -m bench.benchmark.stream: every round, and each speed ratio as the
median of the rounds' paired ratios with its interval and the load (bench.speed_ratio)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.speed_ratio import rows_ratio

# The end-to-end path every other is compared with: the same batches as the streamed one, decoded once.
HELD = "held in memory, S in [256, 512]"


def kinds(device: str) -> tuple[str, ...]:
    return ("tutorials", "streamed") + (("streamed-gpu",) if device != "cpu" else ())


def report(
    root: Path,
    loaders: list[dict],
    checked: dict | None,
    e2e: list[dict],
    args,
    counts: list[int],
    loads: list[float],
) -> str:
    from bench import provenance

    def mib(b):
        return "" if b is None else f"{b / 2**20:,.0f}"

    gpu = args.device != "cpu"
    stamp = provenance.stamp(args.device)
    names = kinds(args.device)
    lines = [
        f"# Streamed image folders on {'a GPU' if gpu else 'this CPU'}",
        "",
        f"- machine: {stamp['host']}, {os.cpu_count()} CPUs, {stamp['device']}; torch {stamp['torch']}",
        f"- commit: {stamp['commit']}",
        f"- command: `python -m bench.benchmark.stream {' '.join(sys.argv[1:])}`",
        f"- tree: {root} ({sum(1 for _ in (root / 'train').rglob('*.jpg'))} training JPEGs)",
        f"- load (1-minute average) before: {loads[0]:.2f}; after: {loads[1]:.2f}",
        "",
        f"## Loaders: batch {args.batch}, {args.images} images a measurement, batches on {args.device}",
        "",
        f"{args.rounds} rounds, the loaders in alternating order (A B, B A, ...), each in its own process tree. "
        "A ratio is the median over rounds of the loader's images/s over the tutorials' in the same round.",
        "",
        "| loader | workers | round | images/s | peak RSS sum (MiB) | peak PSS sum (MiB) |"
        + (" peak GPU (MiB) |" if gpu else ""),
        "|---|---|---|---|---|---|" + ("---|" if gpu else ""),
    ]
    for r in loaders:
        lines.append(
            f"| {r['kind']} | {r['workers']} | {r['round']} | {r['images_per_s']:.1f} | {mib(r['peak_rss'])} | "
            f"{mib(r['peak_pss'])} |" + (f" {mib(r['peak_gpu'])} |" if gpu else "")
        )
    lines.append("")
    for workers in counts:
        mine = [r for r in loaders if r["workers"] == workers]
        pss = {k: max(r["peak_pss"] for r in mine if r["kind"] == k) for k in names}
        lines += [
            f"- {workers} workers, {k} over the tutorials' images/s: "
            f"**{rows_ratio(mine, 'kind', k, 'tutorials', loads=loads)['ratio_verdict']}**; "
            f"peak PSS {mib(pss[k])} vs {mib(pss['tutorials'])} MiB (the largest round's)"
            for k in names
            if k != "tutorials"
        ]
    if checked:
        lines += [
            "",
            f"## GPU decoding against CPU decoding: the first training batch ({checked['images']} images)",
            "",
            f"Same draws (order, S, crop, flip); labels equal: {checked['labels_equal']}. Absolute difference "
            f"per value in uint8 levels: mean {checked['mean_levels']:.2f}, 99th percentile "
            f"{checked['p99_levels']:.1f}, max {checked['max_levels']:.0f}.",
        ]
    if e2e:
        lines += [
            "",
            f"## End to end: {args.train_epochs} epoch(s) of VGG-A width {args.width:g} at 224 px, "
            f"{args.train_subset} images (the last epoch's images/s)",
            "",
            f"{args.train_rounds} rounds, the data paths in alternating order.",
            "",
            "| data path | round | train images/s | wall s (incl. loading) |",
            "|---|---|---|---|",
        ]
        lines += [f"| {r['path']} | {r['round']} | {r['train_images_per_s']:.1f} | {r['wall_s']:.1f} |" for r in e2e]
        lines.append("")
        lines += [
            f"- {path} over {HELD}, train images/s: "
            f"{rows_ratio(e2e, 'path', path, HELD, value='train_images_per_s', loads=loads)['ratio_verdict']}"
            for path in dict.fromkeys(r["path"] for r in e2e)
            if path != HELD
        ]
    return "\n".join(lines) + "\n"
