"""Launch overhead: the engine's training step on a fixed batch against a whole epoch end to end.

For each step kind (eager, graph: bench.engine.step) one Engine of the recipe times its step on one batch
resident on the device (the ceiling: no data, no host work between steps), then trains one whole
epoch through Engine.train_epoch (augmented batches made on the device, the lr schedule, the
metrics), without a progress bar, so without a host sync until the epoch's end. The end-to-end
images/s over the fastest fixed-batch images/s says how much of the step's speed a run keeps.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench.benchmark.measure import step_times
from bench.config import RunConfig
from bench.device import resolve_device, synchronize
from bench.engine import distributed, step
from bench.engine.train import Engine

KINDS = ("eager", "graph")


def overhead(config: RunConfig, data_dir: str | None, steps: int, warmup: int) -> dict:
    """Fixed-batch and end-to-end training images/s of `config` under each step kind this device runs."""
    device = resolve_device(config.device)
    rows = []
    for kind in KINDS:
        why = step.why_eager(config, device, distributed.SINGLE) if kind == "graph" else None
        rows.append(
            {"step": kind, "skipped": why} if why else _measure(config.replace(step=kind), data_dir, steps, warmup)
        )
    measured = [r for r in rows if "skipped" not in r]
    ceiling = max((r["fixed_images_per_s"] for r in measured), default=None)
    for row in measured:
        row["end_to_end_share"] = row["end_to_end_images_per_s"] / ceiling
    return {"config": config.to_dict(), "steps": steps, "warmup": warmup, "rows": rows, "fixed_images_per_s": ceiling}


def _measure(config: RunConfig, data_dir: str | None, steps: int, warmup: int) -> dict:
    engine = Engine(config, data_dir)
    generator = torch.Generator(device=engine.device).manual_seed(config.seed)
    x, y = next(
        iter(
            engine.splits.batches(
                "train",
                config.batch_size,
                generator=generator,
                augment=config.augment,
                shuffle=True,
                drop_last=True,
                channels_last=config.channels_last,
            )
        )
    )
    engine.step_model.train()
    engine.step.start_epoch()

    def one_step() -> None:
        engine.step(x, y, config.lr)

    # The warm-up covers the graph step's eager steps and its capture.
    warmup_s = sum(step_times(one_step, max(warmup, step.WARMUP_STEPS + 2), engine.device))
    fixed_s = statistics.median(step_times(one_step, steps, engine.device))
    synchronize(engine.device)
    began = time.perf_counter()
    _, _, seen = engine.train_epoch(1, [])  # reads the epoch's loss back: synchronised
    seconds = time.perf_counter() - began
    return {
        "step": engine.step_kind,
        "batch_size": len(y),
        "warmup_s": warmup_s,
        "fixed_step_ms": 1e3 * fixed_s,
        "fixed_images_per_s": len(y) / fixed_s,
        "epoch_images": seen,
        "epoch_s": seconds,
        "end_to_end_images_per_s": seen / seconds,
    }
