"""End to end: real epochs of bench.train's Engine against the tutorials' DataLoader loop.

The same model, data, batch size and steps (bench.benchmark.tutorial_loop), in many short rounds in one
process: a round is an epoch of each, in alternating order (A B, B A, ...), so that a machine whose
other work comes and goes slows both sides of a round alike. The speed ratio is the median of the
rounds' paired ratios, with a distribution-free interval and the machine's load beside it; where
the interval reaches 1 the ratio is "not measurable" on that machine at that time.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from scipy import stats

from bench import progress
from bench.benchmark.tutorial_loop import TutorialLoop
from bench.config import RunConfig
from bench.engine.train import Engine

# Rounds (an epoch of each loop) when --epochs is not given: keep them short with --subset.
END_TO_END_EPOCHS = 12
CONFIDENCE = 0.95


def end_to_end(config: RunConfig, workers: int, data_dir: str | None) -> tuple[list[dict], dict]:
    """bench.train's Engine vs the tutorials' loop: `config.epochs` rounds of an epoch of each."""
    engine = Engine(config, data_dir)
    tutorial = TutorialLoop(engine, workers)
    loops = {
        "bench.train": lambda epoch, on_batch: engine.train_epoch(epoch, [], on_batch),
        "tutorial": lambda epoch, on_batch: tutorial.train_epoch(on_batch),
    }
    rows, load_before = [], os.getloadavg()[0]
    with progress.RunProgress(label="end-to-end", epochs=2 * config.epochs) as bar:
        for epoch in range(1, config.epochs + 1):
            # A B, B A, ...: neither side always goes first
            order = list(loops.items()) if epoch % 2 else list(loops.items())[::-1]
            for name, train_epoch in order:
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
    ratio = paired_ratio(rows)
    summary = {
        "config": config.to_dict(),
        "steps_per_epoch": len(tutorial.loader),
        "loader_workers": workers,
        "torch_threads": torch.get_num_threads(),
        "bench_images_per_s": speed["bench.train"],
        "tutorial_images_per_s": speed["tutorial"],
        **ratio,
        # before and after: the other work on the machine
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
        "bench_val_acc": engine.evaluate("val")[1],
        "tutorial_val_acc": engine.evaluate("val", tutorial.model)[1],
    }
    return rows, summary


def paired_ratio(rows: list[dict]) -> dict:
    """The median over rounds of bench.train's images/s over the tutorial's in the same round, its
    CONFIDENCE interval from order statistics (no assumption on the noise's shape), and the verdict:
    a ratio whose interval reaches 1 is not measurable."""
    by_round: dict[int, dict[str, float]] = {}
    for r in rows:
        by_round.setdefault(r["epoch"], {})[r["loop"]] = r["images_per_s"]
    ratios = sorted(pair["bench.train"] / pair["tutorial"] for pair in by_round.values())
    median = statistics.median(ratios)
    # The k-th smallest and k-th largest of n bound the median with probability 1 - 2 P(Bin(n, 1/2) < k).
    k = int(stats.binom.ppf((1 - CONFIDENCE) / 2, len(ratios), 0.5))
    if k < 1:
        return {
            "ratio": median,
            "ratio_low": None,
            "ratio_high": None,
            "rounds": len(ratios),
            "ratio_verdict": f"not measurable: {len(ratios)} rounds give no {CONFIDENCE:.0%} interval",
        }
    low, high = ratios[k - 1], ratios[len(ratios) - k]
    measured = f"{median:.2f}x ({CONFIDENCE:.0%} CI {low:.2f} to {high:.2f}, {len(ratios)} rounds)"
    verdict = f"not measurable: {measured} reaches 1" if low <= 1 <= high else measured
    return {"ratio": median, "ratio_low": low, "ratio_high": high, "rounds": len(ratios), "ratio_verdict": verdict}
