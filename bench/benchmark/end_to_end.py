"""End to end: real epochs of bench.train's Engine against the tutorials' DataLoader loop.

The same model, data, batch size and steps (bench.benchmark.tutorial_loop), in many short rounds in one
process: a round is an epoch of each, in alternating order (A B, B A, ...), so that a machine whose
other work comes and goes slows both sides of a round alike. The speed ratio is the median of the
rounds' paired ratios, with a distribution-free interval and the machine's load beside it; where
the interval reaches 1 the ratio is "not measurable" on that machine at that time (all of it
bench.speed_ratio, which every speed comparison shares).
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from bench import progress, speed_ratio
from bench.benchmark.tutorial_loop import TutorialLoop
from bench.config import RunConfig
from bench.engine.train import Engine

# Rounds (an epoch of each loop) when --epochs is not given: keep them short with --subset.
END_TO_END_EPOCHS = 12


def end_to_end(config: RunConfig, workers: int, data_dir: str | None) -> tuple[list[dict], dict]:
    """bench.train's Engine vs the tutorials' loop: `config.epochs` rounds of an epoch of each."""
    engine = Engine(config, data_dir)
    tutorial = TutorialLoop(engine, workers)
    loops = {
        "bench.train": lambda epoch, on_batch: engine.train_epoch(epoch, [], on_batch),
        "tutorial": lambda epoch, on_batch: tutorial.train_epoch(on_batch),
    }
    rows, load_before = [], speed_ratio.load()
    with progress.RunProgress(label="end-to-end", epochs=2 * config.epochs) as bar:
        for epoch in range(1, config.epochs + 1):
            for name, train_epoch in speed_ratio.in_turns(list(loops.items()), epoch):  # A B, B A, ...
                began = time.perf_counter()
                loss, acc, seen = train_epoch(epoch, bar.batch_done)  # both read the loss back: synchronised
                seconds = time.perf_counter() - began
                rows.append(
                    {
                        "epoch": epoch,
                        "loop": name,
                        "images": seen,
                        "seconds": seconds,
                        "images_per_s": seen / seconds,
                        "train_loss": loss,
                        "train_acc": acc,
                    }
                )
                bar.progress.update(bar.epochs, advance=1, info=f"{name} {seen / seconds:.0f} img/s")
    speed = {name: statistics.median(r["images_per_s"] for r in rows if r["loop"] == name) for name in loops}
    loads = [load_before, speed_ratio.load()]  # before and after: the other work on the machine
    summary = {
        "config": config.to_dict(),
        "steps_per_epoch": len(tutorial.loader),
        "loader_workers": workers,
        "torch_threads": torch.get_num_threads(),
        "bench_images_per_s": speed["bench.train"],
        "tutorial_images_per_s": speed["tutorial"],
        **paired_ratio(rows, loads),
        "cpu_count": os.cpu_count(),
        "bench_val_acc": engine.evaluate("val")[1],
        "tutorial_val_acc": engine.evaluate("val", tutorial.model)[1],
    }
    return rows, summary


def paired_ratio(rows: list[dict], loads: list[float] | None = None) -> dict:
    """bench.train's images/s over the tutorial's in the same round: bench.speed_ratio'
    median of the paired ratios, its interval and verdict."""
    return speed_ratio.rows_ratio(rows, "loop", "bench.train", "tutorial", round_key="epoch", loads=loads)
