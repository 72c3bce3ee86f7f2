"""Tracking overhead: what MLflow and Optuna add to each run of a study's smoke budget.

The only benchmark mode that touches them, so it imports them (through bench.grid, bench.runner
and bench.tracking) inside its function: the other modes, the GPU suite among them, run where
neither is installed.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench import progress, studies
from bench.errors import BenchError
from bench.train import fit, resolve_device

TARGET_S = 2.0  # seconds per run the tracking may add


def tracking_overhead(study_name: str, repeats: int, data_dir: str | None) -> tuple[list[dict], dict, torch.device]:
    """Seconds per run that a tracked grid (MLflow + Optuna) adds to bench.train.fit of the same configs.

    Each repeat runs the study's smoke budget twice in a fresh temporary folder: bare (fit alone,
    with the same per-epoch checkpoints the runner writes) and tracked (the ablation command's
    grid through the runner, quiet). The MLflow store is created before the tracked pass is
    timed: it is made once per machine, not per run. The first config is trained once untimed
    so neither pass pays warm-up.
    """
    from bench import grid, preflight, runner  # here, not at the top: importing MLflow and Optuna costs seconds
    from bench.tracking import Tracker

    study = studies.load(study_name)
    points = study.grid("smoke")
    rows = []
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        fit(points[0].config, data_dir=data_dir)
        bar = progress.make_progress()
        with bar:
            task = bar.add_task(f"{study_name} smoke, bare and tracked", total=2 * repeats, info="")
            for repeat in range(1, repeats + 1):
                folder = Path(f"repeat-{repeat}")
                folder.mkdir()
                with contextlib.chdir(folder):
                    began = time.perf_counter()
                    for point in points:
                        fit(point.config, checkpoint_dir=Path("bare") / point.config.hash, data_dir=data_dir)
                    bare = time.perf_counter() - began
                    bar.advance(task)
                    store_began = time.perf_counter()
                    Tracker("sqlite:///mlflow.db")
                    store = time.perf_counter() - store_began
                    began = time.perf_counter()
                    storage_url = ".bench/optuna.journal"
                    preflight.check([p.config for p in points], data_dir=data_dir,
                                    checkpoint_root=Path(".bench/checkpoints"))
                    job, _ = grid.open_grid(study, points, Tracker("sqlite:///mlflow.db"), storage_url,
                                         runner.open_storage(storage_url))
                    runner.work(job, checkpoint_root=Path(".bench/checkpoints"), data_dir=data_dir, quiet=True)
                    tracked = time.perf_counter() - began
                    finished = job.all_finished()  # here: the journal's path is relative to this folder
                    bar.advance(task)
                if not finished:
                    raise BenchError(f"the tracked smoke run of study {study_name!r} did not finish; run "
                                     f"python -m bench.ablation --study {study_name} --budget smoke to see why")
                rows.append({"repeat": repeat, "runs": len(points), "bare_s": bare, "tracked_s": tracked,
                             "store_creation_s": store, "overhead_per_run_s": (tracked - bare) / len(points)})
    summary = {
        "study": study_name,
        "budget": "smoke",
        "runs": len(points),
        "overhead_per_run_s": statistics.median(r["overhead_per_run_s"] for r in rows),
        "target_s": TARGET_S,
    }
    return rows, summary, resolve_device(points[0].config.device)
