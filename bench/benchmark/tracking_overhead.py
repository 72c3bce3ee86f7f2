"""Tracking overhead: what MLflow and Optuna add to each run of a study's smoke budget.

The tracked pass runs the ablation command as a person does (a command never imports another),
less the start of that process, timed separately; bench.tracking is imported inside the function,
so the other modes, the GPU suite among them, run where neither MLflow nor Optuna is installed.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import progress
from bench.device import resolve_device
from bench.engine.train import fit
from bench.errors import BenchError
from bench.provenance import PROJECT_ROOT
from bench.run import studies

TARGET_S = 2.0  # seconds per run the tracking may add


def tracking_overhead(study_name: str, repeats: int, data_dir: str | None) -> tuple[list[dict], dict, torch.device]:
    """Seconds per run that a tracked study (MLflow + Optuna) adds to bench.engine.train.fit of the same configs.

    Each repeat runs the study's smoke budget twice in a fresh temporary folder: bare (fit alone,
    with the same per-epoch checkpoints the runner writes) and tracked (`python -m bench.ablation
    --quiet`, less the seconds that starting that command takes: `--list` in the same folder).
    The MLflow store is created before the tracked pass is timed: it is made once per machine,
    not per run. The first config is trained once untimed so neither pass pays warm-up.
    """
    from bench.tracking import Tracker  # here, not at the top: importing MLflow costs seconds

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
                    command = [sys.executable, "-m", "bench.ablation"]
                    began = time.perf_counter()
                    subprocess.run(
                        [*command, "--list"],
                        capture_output=True,
                        check=True,
                        env={
                            **os.environ,
                            "PYTHONPATH": os.pathsep.join(
                                filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])
                            ),
                        },
                    )
                    start = time.perf_counter() - began
                    began = time.perf_counter()
                    done = subprocess.run(
                        [
                            *command,
                            "--study",
                            study_name,
                            "--budget",
                            "smoke",
                            "--quiet",
                            "--tracking-uri",
                            "sqlite:///mlflow.db",
                            "--storage",
                            ".bench/optuna.journal",
                            *(["--data-dir", data_dir] if data_dir else []),
                        ],
                        capture_output=True,
                        env={
                            **os.environ,
                            "PYTHONPATH": os.pathsep.join(
                                filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])
                            ),
                        },
                    )
                    tracked = time.perf_counter() - began - start
                    finished = done.returncode == 0
                    bar.advance(task)
                if not finished:
                    raise BenchError(
                        f"the tracked smoke run of study {study_name!r} did not finish; run "
                        f"python -m bench.ablation --study {study_name} --budget smoke to see why"
                    )
                rows.append(
                    {
                        "repeat": repeat,
                        "runs": len(points),
                        "bare_s": bare,
                        "tracked_s": tracked,
                        "store_creation_s": store,
                        "command_start_s": start,
                        "overhead_per_run_s": (tracked - bare) / len(points),
                    }
                )
    summary = {
        "study": study_name,
        "budget": "smoke",
        "runs": len(points),
        "overhead_per_run_s": statistics.median(r["overhead_per_run_s"] for r in rows),
        "target_s": TARGET_S,
    }
    return rows, summary, resolve_device(points[0].config.device)
