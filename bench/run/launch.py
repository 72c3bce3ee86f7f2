"""Train one config over N processes of this machine with torchrun, from a study's worker.

The worker keeps its job (claiming the trial, MLflow, Optuna's pruning, the heartbeat); the run
itself is `torchrun --nproc-per-node N -m bench.train`, whose rank 0 appends every epoch and the
final result to an events file that the worker follows. So one process talks to MLflow, as with
a single-process run, and `fit_in_processes` is a drop-in for `bench.engine.train.fit`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench import models
from bench.config import RunConfig
from bench.engine import checkpoint
from bench.engine.train import EpochStats, Result
from bench.errors import BenchError

POLL_S = 0.5
PR_SET_PDEATHSIG = 1  # prctl(2)


def fit_in_processes(
    config: RunConfig,
    *,
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_batch: Callable | None = None,  # rank 0's batches stay in its process; the bar moves per epoch
    checkpoint_dir: str | Path,
    data_dir: str | None = None,
    backend: str = "auto",
    init_from: str | Path | None = None,
) -> Result:
    """Run `config` (its world_size processes) to the end and return rank 0's result with the model.

    If `on_epoch` raises (Optuna pruning) or the worker is interrupted, the processes are stopped
    first; their last checkpoint stays for a later resume. A rank that fails fails the run.
    """
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    log_path = checkpoint_dir / "torchrun.log"
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        settings, events = Path(tmp, "config.json"), Path(tmp, "events.jsonl")
        settings.write_text(json.dumps(config.to_dict()))
        events.touch()
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={config.world_size}",
            "-m",
            "bench.train",
            "--config-json",
            str(settings),
            "--events",
            str(events),
            "--checkpoint-dir",
            str(checkpoint_dir),
            "--dist-backend",
            backend,
            *(["--data-dir", data_dir] if data_dir else []),
            *(["--init-from", str(init_from)] if init_from else []),
        ]
        with open(log_path, "a") as log:
            # A session of its own, so that stopping the run stops torchrun and every rank together.
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_environment(config.world_size),
                start_new_session=True,
                preexec_fn=_die_with(os.getpid()),
            )
        try:
            record = _follow(process, events, on_epoch)
        except BaseException:
            stop_group(process)
            raise
    if process.returncode != 0 or record is None:
        raise _failure(process.returncode, log_path)
    return _with_model(Result.from_record(record), config)


def _follow(process: subprocess.Popen, events: Path, on_epoch) -> dict[str, Any] | None:
    """Relay rank 0's epochs as they come; return its result record once the processes end."""
    record, offset = None, 0
    while True:
        finished = process.poll() is not None
        with open(events) as f:
            f.seek(offset)
            text = f.read()
        complete = text[: text.rfind("\n") + 1]  # a line still being written is read next time
        offset += len(complete.encode())
        for line in complete.splitlines():
            event = json.loads(line)
            if "epoch" in event and on_epoch is not None:
                on_epoch(EpochStats(**event["epoch"]))
            record = event.get("result", record)
        if finished:
            return record
        time.sleep(POLL_S)


def _die_with(worker: int) -> Callable[[], None]:
    """What torchrun runs before it starts: SIGTERM when this worker dies, however it dies (SIGKILL
    included), so that torchrun stops its ranks instead of training on beside the rerun's torchrun in
    the same checkpoint folder. Linux's PR_SET_PDEATHSIG; elsewhere nothing."""

    def arm() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != worker:  # the worker died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def _environment(processes: int) -> dict[str, str]:
    """Threads (CPU) or GPUs (CUDA) for this worker's processes, out of what the machine has."""
    env = dict(os.environ)
    workers = int(env.get("BENCH_WORKERS", "1"))
    index = int(env.get("BENCH_WORKER_INDEX", "0"))
    if torch.cuda.is_available() and "CUDA_VISIBLE_DEVICES" not in env:
        first = index * processes
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(first + i) for i in range(processes))
    env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // (workers * processes)))
    return env


def stop_group(process: subprocess.Popen, grace: float = 30) -> None:
    """Stop a process started in a session of its own, with all it started: SIGTERM, then SIGKILL
    after `grace` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _failure(code: int | None, log_path: Path) -> Exception:
    """A rank's own one-line error when it gave one (bad input), else where to read what happened."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    errors = [line.split("error: ", 1)[1] for line in lines if line.startswith("error: ")]
    if errors:
        return BenchError(errors[-1])
    return RuntimeError(f"torchrun exited with code {code}: see {log_path}")


def _with_model(result: Result, config: RunConfig) -> Result:
    """Rank 0's best weights in a fresh module, for tracking to log as the run's model."""
    channels, size = result.input_shape[0], result.input_shape[-1]
    model = models.build(
        config.model, num_classes=len(result.classes), in_channels=channels, image_size=size, **config.model_options
    )
    if result.best_checkpoint:
        state = checkpoint.load(result.best_checkpoint, config_hash=config.hash)["model"]
        checkpoint.load_weights(model, state, result.best_checkpoint)
    result.model = model.eval()
    return result
