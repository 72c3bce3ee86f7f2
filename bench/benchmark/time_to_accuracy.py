"""Time to accuracy: how long a recipe takes to reach a target accuracy.

`until` trains through bench.engine.train.fit until validation accuracy reaches the target (the
`--until` mode). `race` (the GPU suite) runs bench.train's Engine and then the tutorials' loop
(bench.benchmark.tutorial_loop) on the same recipe to a target *test* accuracy, evaluating after every
epoch, and times where each loop's seconds go: setup, data, step, evaluation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench import progress
from bench.benchmark.tutorial_loop import TutorialLoop
from bench.config import RunConfig
from bench.device import synchronize
from bench.engine.train import Engine, EpochStats, fit


class _Reached(Exception):
    """Raised from fit's on_epoch to stop training once the target accuracy is reached."""


def until(config: RunConfig, target: float, data_dir: str | None) -> tuple[list[dict], dict]:
    rows: list[dict] = []
    began = time.perf_counter()

    def on_epoch(stats) -> None:
        bar.epoch_done(stats)
        rows.append(
            {
                "epoch": stats.epoch,
                "val_acc": stats.val_acc,
                "train_seconds": stats.seconds,
                "seconds_since_start": time.perf_counter() - began,
                "images_per_s": stats.images_per_s,
            }
        )
        if stats.val_acc >= target:
            raise _Reached

    with progress.RunProgress(label=f"until val acc {target}", epochs=config.epochs) as bar:
        with contextlib.suppress(_Reached):
            fit(config, on_epoch=on_epoch, on_batch=bar.batch_done, data_dir=data_dir)
    reached = bool(rows) and rows[-1]["val_acc"] >= target
    return rows, {
        "config": config.to_dict(),
        "target": target,
        "reached": reached,
        "epochs": len(rows),
        # From the call of fit (data loading and model building included) to the end of the epoch that got there.
        "seconds": rows[-1]["seconds_since_start"] if rows else None,
        "train_seconds": sum(r["train_seconds"] for r in rows),  # the epochs' training only, evaluation excluded
        "best_val_acc": max((r["val_acc"] for r in rows), default=None),
    }


# --- the GPU suite's race: bench.train vs the tutorials' loop --------------------------------------


@dataclass
class Loop:
    """One contestant: how it trains an epoch, which model it evaluates, how long its data alone takes."""

    name: str
    train_epoch: Callable[[int, list, Callable], tuple[float, float, int]]  # (epoch, history, on_batch)
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    data_epoch: Callable[[], None]  # one epoch of batches on the device, no model
    setup_s: float


def race(
    config: RunConfig, target: float, data_dir: str | None, loader_workers: int, cap_factor: float, time_left
) -> dict:
    """bench.train, then the tutorials' loop, each trained until its test accuracy reaches `target`.

    The tutorial loop stops at the target, at `config.epochs`, once its training time passes
    `cap_factor` x bench.train's (enough to decide a ">= cap_factor x faster" target), or when
    `time_left()` runs out, whichever comes first; its row says which. Returns both curves and a
    breakdown of each loop's time: setup (data loading, model), data alone (one epoch of batches
    without the model, timed separately), step (training time minus data alone), evaluation.
    """
    began = time.perf_counter()
    engine = Engine(config, data_dir)
    synchronize(engine.device)
    engine_loop = Loop(
        "bench.train",
        engine.train_epoch,
        engine.eval_model,
        engine.optimizer,
        lambda: _engine_data_epoch(engine),
        time.perf_counter() - began,
    )
    result = {
        "config": config.to_dict(),
        "step": engine.step_kind,
        "target": target,
        "loader_workers": loader_workers,
        "cap_factor": cap_factor,
        "loops": [],
    }
    first = _run(engine, engine_loop, target, config.epochs, None, time_left)
    result["loops"].append(first)
    began = time.perf_counter()
    tutorial = TutorialLoop(engine, loader_workers)
    tutorial_loop = Loop(
        "tutorial",
        lambda epoch, history, on_batch: tutorial.train_epoch(on_batch),
        tutorial.model,
        tutorial.optimizer,
        lambda: _loader_epoch(tutorial, engine.device),
        time.perf_counter() - began,
    )
    cap = cap_factor * (first["seconds_to_target"] or first["train_seconds"])
    result["loops"].append(_run(engine, tutorial_loop, target, config.epochs, cap, time_left))
    engine_s, tutorial_s = (loop["seconds_to_target"] for loop in result["loops"])
    if engine_s and tutorial_s:
        result["speedup"], result["speedup_is_lower_bound"] = tutorial_s / engine_s, False
    elif engine_s:  # the tutorial loop was stopped before the target: it is at least this much slower
        result["speedup"], result["speedup_is_lower_bound"] = result["loops"][1]["train_seconds"] / engine_s, True
    else:
        result["speedup"], result["speedup_is_lower_bound"] = None, False
    return result


def _run(engine: Engine, loop: Loop, target: float, epochs: int, cap_s: float | None, time_left) -> dict:
    rows, history, train_s, stop = [], [], 0.0, "epochs"
    with progress.RunProgress(label=f"{loop.name} to test acc {target}", epochs=epochs) as bar:
        for epoch in range(1, epochs + 1):
            began = time.perf_counter()
            loss, acc, seen = loop.train_epoch(epoch, history, bar.batch_done)  # reads the loss: synchronised
            seconds = time.perf_counter() - began
            train_s += seconds
            began = time.perf_counter()
            val_loss, val_acc, _ = engine.evaluate("val", loop.model)
            test_acc = engine.evaluate("test", loop.model)[1]
            eval_s = time.perf_counter() - began
            lr = float(loop.optimizer.param_groups[0]["lr"])  # a device tensor under the graph step
            history.append(
                EpochStats(
                    epoch=epoch,
                    train_loss=loss,
                    train_acc=acc,
                    val_loss=val_loss,
                    val_acc=val_acc,
                    lr=lr,
                    seconds=seconds,
                    images_per_s=seen / seconds,
                )
            )
            rows.append(
                {
                    "epoch": epoch,
                    "train_loss": loss,
                    "train_acc": acc,
                    "val_acc": val_acc,
                    "test_acc": test_acc,
                    "train_s": seconds,
                    "eval_s": eval_s,
                    "train_seconds_total": train_s,
                    "images_per_s": seen / seconds,
                }
            )
            bar.epoch_done(history[-1])
            if test_acc >= target:
                stop = "target"
                break
            if cap_s is not None and train_s > cap_s:
                stop = "cap"
                break
            if time_left() < 2 * (seconds + eval_s):
                stop = "suite time limit"
                break
    reached = [r for r in rows if r["test_acc"] >= target]
    began = time.perf_counter()
    loop.data_epoch()
    data_s = time.perf_counter() - began
    epoch_s = sum(r["train_s"] for r in rows) / len(rows)
    return {
        "loop": loop.name,
        "rows": rows,
        "stopped_by": stop,
        "epochs": len(rows),
        "seconds_to_target": reached[0]["train_seconds_total"] if reached else None,
        "wall_seconds_to_target": (
            loop.setup_s + reached[0]["train_seconds_total"] + sum(r["eval_s"] for r in rows[: reached[0]["epoch"]])
        )
        if reached
        else None,
        "train_seconds": train_s,
        "best_test_acc": max(r["test_acc"] for r in rows),
        "breakdown": {
            "setup_s": loop.setup_s,
            "epoch_s": epoch_s,
            "data_alone_epoch_s": data_s,
            "step_epoch_s": max(0.0, epoch_s - data_s),
            "eval_epoch_s": sum(r["eval_s"] for r in rows) / len(rows),
        },
    }


def _engine_data_epoch(engine: Engine) -> None:
    """The Engine's batches of one epoch (crop, flip, normalise on the device), with nothing trained."""
    config = engine.config
    generator = torch.Generator(device=engine.device).manual_seed(config.seed)
    for _batch in engine.splits.batches(
        "train",
        config.batch_size,
        generator=generator,
        augment=config.augment,
        shuffle=True,
        drop_last=True,
        channels_last=config.channels_last,
    ):
        pass
    synchronize(engine.device)


def _loader_epoch(tutorial: TutorialLoop, device: torch.device) -> None:
    """The tutorial DataLoader's batches of one epoch, copied to the device, with nothing trained."""
    for x, y in tutorial.loader:
        x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    synchronize(device)
