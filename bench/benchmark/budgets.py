"""How long the studies take on this device, without MLflow or Optuna (the GPU suite's study part).

`workers_share` trains a study's budget (smoke in the tests, a shortened gpu budget on a GPU)
through the engine (bench.engine.train.fit) with N worker processes sharing the device, as `--workers N`
would, timed against one worker: what packing runs onto one GPU gains. `first_epoch` times the
first epoch of one run config at full width on the carried data; bench.run.budget_estimates turns
those into the expected length of every study's `full` budget, and a `gpu` budget's minutes packed
on one H100.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from bench.config import RunConfig
from bench.device import synchronize
from bench.engine.train import Engine, fit
from bench.run import studies

# --- a smoke study shared by worker processes --------------------------------------------------------


def workers_share(
    study_name: str,
    device: str,
    worker_counts: tuple[int, ...],
    data_dir: str | None,
    budget: str = "smoke",
    overrides: dict | None = None,
    seeds: tuple[int, ...] | None = None,
) -> dict:
    """The study's `budget` (with `overrides`, at `seeds`) trained by each count of worker processes in
    turn, sharing `device`: how much packing runs onto one device shortens a study."""
    points = studies.load(study_name).grid(budget, {**(overrides or {}), "device": device}, seeds)
    passes = []
    for workers in worker_counts:
        threads = max(1, (os.cpu_count() or 1) // workers)
        began = time.perf_counter()
        # spawn, not fork: CUDA cannot be used in a forked child of a process that has touched it.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(
                pool.map(
                    _train, [p.config.to_dict() for p in points], [threads] * len(points), [data_dir] * len(points)
                )
            )
        wall = time.perf_counter() - began
        for point, run in zip(points, runs):
            run.update(variant=point.variant, seed=point.seed)
        passes.append({"workers": workers, "wall_s": wall, "runs": runs, "processes": len({r["pid"] for r in runs})})
    return {"study": study_name, "budget": budget, "overrides": overrides or {}, "device": device, "passes": passes}


def _train(config: dict, threads: int, data_dir: str | None) -> dict:
    """One run in a worker process (top level, so the spawned child can import it)."""
    torch.set_num_threads(threads)
    began = time.perf_counter()
    result = fit(RunConfig.from_dict(config), data_dir=data_dir)
    return {
        "pid": os.getpid(),
        "device": result.device,
        "seconds": time.perf_counter() - began,
        "train_seconds": result.train_seconds,
        "test_acc": result.test_acc,
    }


# --- full budgets: first epochs ------------------------------------------------------------------


def first_epoch(config: RunConfig, data_dir: str | None, dataset: str, overrides: dict) -> dict:
    """The first training epoch of `config` on `dataset` (the carried one), and one validation pass.

    The device is synchronised once a fifth of the way in, so the epoch splits into its start
    (cuDNN's algorithm search, the first allocations) and the steady rate later epochs run at.
    """
    config = config.replace(dataset=dataset, **overrides)
    began = time.perf_counter()
    engine = Engine(config, data_dir)
    setup_s = time.perf_counter() - began
    marks = {}

    def on_batch(done: int, total: int, loss) -> None:
        if done == max(1, total // 5) and "steady" not in marks:
            synchronize(engine.device)
            marks["steady"], marks["steps"] = time.perf_counter(), total - done

    began = time.perf_counter()
    _, _, seen = engine.train_epoch(1, [], on_batch)
    ended = time.perf_counter()
    engine.evaluate("val")
    val_s = time.perf_counter() - ended
    steady_images = marks["steps"] * config.batch_size
    return {
        "config": config.to_dict(),
        "setup_s": setup_s,
        "first_epoch_s": ended - began,
        "images": seen,
        "steady_images_per_s": steady_images / (ended - marks["steady"]) if steady_images else seen / (ended - began),
        "val_s": val_s,
        "val_images": len(engine.splits.val_y),
    }
