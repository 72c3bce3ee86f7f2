"""End to end: real epochs of bench.train's Engine against the tutorials' DataLoader loop.

The same model, data, batch size and steps (bench.tutorial_loop), alternating epoch by epoch
(A B A B ...) in one process, and their ratio of images/s.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench import progress
from bench.config import RunConfig
from bench.train import Engine
from bench.tutorial_loop import TutorialLoop

END_TO_END_EPOCHS = 3  # epochs of each loop when --epochs is not given


def end_to_end(config: RunConfig, workers: int, data_dir: str | None) -> tuple[list[dict], dict]:
    """bench.train's Engine vs the tutorials' loop, an epoch of each in turn, `config.epochs` times."""
    engine = Engine(config, data_dir)
    tutorial = TutorialLoop(engine, workers)
    loops = {
        "bench.train": lambda epoch, on_batch: engine.train_epoch(epoch, [], on_batch),
        "tutorial": lambda epoch, on_batch: tutorial.train_epoch(on_batch),
    }
    rows = []
    with progress.RunProgress(label="end-to-end", epochs=2 * config.epochs) as bar:
        for epoch in range(1, config.epochs + 1):
            for name, train_epoch in loops.items():
                began = time.perf_counter()
                loss, acc, seen = train_epoch(epoch, bar.batch_done)  # both read the loss back: synchronised
                seconds = time.perf_counter() - began
                rows.append({"epoch": epoch, "loop": name, "images": seen, "seconds": seconds,
                             "images_per_s": seen / seconds, "train_loss": loss, "train_acc": acc})
                bar.progress.update(bar.epochs, advance=1, info=f"{name} {seen / seconds:.0f} img/s")
    speed = {name: statistics.median(r["images_per_s"] for r in rows if r["loop"] == name) for name in loops}
    summary = {
        "config": config.to_dict(),
        "steps_per_epoch": len(tutorial.loader),
        "loader_workers": workers,
        "torch_threads": torch.get_num_threads(),
        "bench_images_per_s": speed["bench.train"],
        "tutorial_images_per_s": speed["tutorial"],
        "ratio": speed["bench.train"] / speed["tutorial"],
        "bench_val_acc": engine.evaluate("val")[1],
        "tutorial_val_acc": engine.evaluate("val", tutorial.model)[1],
    }
    return rows, summary
