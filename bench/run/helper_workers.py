"""The helper worker processes of `--workers N`: N - 1 more processes running the same command, sharing
the CPU threads out among them, and stopped with SIGTERM (which they handle as an interruption)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from bench.run import packing
from bench.store_files import STATE_DIR


def spawn_helpers(
    module: str, argv: list[str] | None, count: int, log_dir: Path = STATE_DIR / "logs"
) -> list[subprocess.Popen]:
    """Start `count` more worker processes running the same command (each as --workers 1).

    The CPU threads are shared out among the workers: several processes each spinning as many
    threads as there are cores run slower together than one alone.
    """
    # The flags as given, with --workers 1 instead of the parent's (auto would measure and spawn again).
    args = sys.argv[1:] if argv is None else argv
    threads = str(max(1, (os.cpu_count() or 1) // (count + 1)))
    if count:
        torch.set_num_threads(int(threads))
    log_dir.mkdir(parents=True, exist_ok=True)
    helpers = []
    # Each worker's index and the count let a worker of torchrun groups pick its own GPUs (bench.run.launch).
    os.environ.update(BENCH_WORKERS=str(count + 1), BENCH_WORKER_INDEX="0")
    # Helpers ignore Ctrl-C (the ignored SIGINT is inherited through exec, and Python keeps it so):
    # one that is still importing would die of it with a traceback in its log. This process
    # stops them with SIGTERM instead (stop_helpers), which they handle as an interruption.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for i in range(count):
            # The helper writes to its own copy of the file; this process closes its copy at once.
            with open(log_dir / f"{module.rsplit('.', 1)[-1]}-worker-{i + 1}.log", "w") as log:
                helpers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", module, *packing.helper_args(args), "--quiet"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env={**os.environ, "OMP_NUM_THREADS": threads, "BENCH_WORKER_INDEX": str(i + 1)},
                    )
                )
    finally:
        signal.signal(signal.SIGINT, previous)
    return helpers


def stop_helpers(helpers: list[subprocess.Popen]) -> None:
    for helper in helpers:
        if helper.poll() is None:
            helper.send_signal(signal.SIGTERM)
    for helper in helpers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            helper.wait(timeout=60)
