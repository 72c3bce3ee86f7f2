"""--workers auto: how many runs of a study to pack onto its one GPU, from a short measurement.

One 32 px run leaves a big GPU idle most of each step: the host launches kernels one by one and
the GPU waits between them. More worker processes fill those gaps (the GPU time-slices their
kernels) until the GPU is busy, its memory is full, or the host has no core left to drive another
worker's Python loop. So `auto` trains the study's first run for a few dozen steps, nothing
recorded, and measures what one run takes: its peak GPU memory and the share of a step the GPU
spends in kernels (torch.profiler). The count is the least of: the runs that fit in the free
memory, enough runs to keep the GPU busy (1 / busy share, rounded up), the host's cores, and
MAX_WORKERS. On a CPU it is one: runs there share the same cores, so packing gains nothing.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from bench import provenance
from bench.config import RunConfig
from bench.device import free_memory, kernel_micros, resolve_device, synchronize
from bench.engine.train import fit
from bench.errors import one_line
from bench.progress import console

AUTO = "auto"
MAX_WORKERS = 8  # the most the GPU suite measures; past the busy point more contexts only time-slice
CONTEXT_BYTES = 512 * 2**20  # a process's CUDA context and library workspaces, outside torch's allocator
MEMORY_SHARE = 0.9  # of the free memory: headroom for fragmentation and evaluation batches
WARMUP_STEPS = 10  # cuDNN's algorithm search and the first allocations: not timed
TIMED_STEPS = 20  # wall time per step, unprofiled
PROFILED_STEPS = 5  # kernel time per step (the profiler slows the host, so not timed for wall)
GIB = 2**30


@dataclass(frozen=True)
class Measurement:
    """One run alone on the GPU."""

    peak_bytes: int  # the most torch's allocator held (its reserved memory)
    step_s: float | None  # wall seconds per training step
    busy: float | None  # the share of a step the GPU spends in kernels; None when not profiled
    why_not: str = ""  # why busy is None


@dataclass(frozen=True)
class Choice:
    workers: int
    limits: dict[str, int]  # the count each limit allows, by name

    @property
    def binding(self) -> str:
        return min(self.limits, key=self.limits.__getitem__)


def choose(free_bytes: int, measured: Measurement, cores: int, cap: int = MAX_WORKERS) -> Choice:
    """The workers to start: the least count any limit allows, and never fewer than one (the
    measured run itself fitted)."""
    limits = {"memory": int(free_bytes * MEMORY_SHARE // (measured.peak_bytes + CONTEXT_BYTES))}
    if measured.busy is not None:
        limits["GPU busy share"] = math.ceil(1 / measured.busy) if measured.busy > 0 else cap
    limits["host cores"] = cores
    limits["cap"] = cap
    return Choice(max(1, min(limits.values())), limits)


def explain(choice: Choice, measured: Measurement, free_bytes: int, device_name: str) -> str:
    """The one line `auto` prints: what it chose, and the numbers that chose it."""
    per_run = (measured.peak_bytes + CONTEXT_BYTES) / GIB
    parts = [
        f"one run peaks at {measured.peak_bytes / GIB:.2f} GiB (+{CONTEXT_BYTES / GIB:.2f} context) and "
        f"{free_bytes / GIB:.1f} GiB are free: {choice.limits['memory']} fit at {per_run:.2f} GiB "
        f"in {MEMORY_SHARE:.0%} of it"
    ]
    if measured.busy is not None:
        parts.append(
            f"the GPU is busy {measured.busy:.0%} of a {1e3 * (measured.step_s or 0):.1f} ms step: "
            f"{choice.limits['GPU busy share']} keep it busy"
        )
    else:
        parts.append(f"GPU busy share not measured ({measured.why_not})")
    parts.append(f"{choice.limits['host cores']} host cores; at most {choice.limits['cap']}")
    plural = "s" if choice.workers > 1 else ""
    return f"--workers auto: {choice.workers} worker{plural} on {device_name} (set by {choice.binding}): " + "; ".join(
        parts
    )


def auto_workers(config: RunConfig, data_dir: str | None) -> int:
    """The count `--workers auto` means for runs like `config` on this machine; said on stderr."""
    device = resolve_device(config.device)
    if device.type != "cuda":
        console.print(
            f"--workers auto: 1 worker (device {device.type}: runs there share the same cores, "
            "so packing several gains nothing)",
            soft_wrap=True,
            highlight=False,
        )
        return 1
    measured = measure(config, data_dir, device)
    free_bytes, _ = torch.cuda.mem_get_info(device)
    choice = choose(free_bytes, measured, host_cores())
    console.print(
        explain(choice, measured, free_bytes, provenance.device_name(device)), soft_wrap=True, highlight=False
    )
    return choice.workers


def host_cores() -> int:
    """The cores this process may run on (a container's share, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Enough(Exception):
    """Raised from fit's batch callback once the steps are measured: it ends the run there."""


class _Window:
    """Follows fit's batches: times TIMED_STEPS after the warm-up, then profiles PROFILED_STEPS."""

    def __init__(self, device: torch.device):
        self.device, self.steps = device, 0
        self.began = self.step_s = None
        self.profiler = None
        self.busy = None
        self.why_not = f"the run has fewer than {WARMUP_STEPS + TIMED_STEPS + PROFILED_STEPS} steps"

    def batch_done(self, done: int, total: int, loss: torch.Tensor) -> None:
        self.steps += 1
        if self.steps == WARMUP_STEPS:
            synchronize(self.device)
            self.began = time.perf_counter()
        elif self.steps == WARMUP_STEPS + TIMED_STEPS:
            synchronize(self.device)
            self.step_s = (time.perf_counter() - self.began) / TIMED_STEPS
            self._start_profiler()
        elif self.steps == WARMUP_STEPS + TIMED_STEPS + PROFILED_STEPS:
            self._stop_profiler()
            raise _Enough

    def _start_profiler(self) -> None:
        try:
            self.profiler = profile(activities=[ProfilerActivity.CUDA])
            self.profiler.start()
        except Exception as exc:  # noqa: BLE001 - no CUPTI here: the count goes by memory and cores
            self.profiler, self.why_not = None, f"torch.profiler: {one_line(exc)}"
            raise _Enough from None

    def _stop_profiler(self) -> None:
        synchronize(self.device)
        try:
            self.profiler.stop()
            kernels = [kernel_micros(e) for e in self.profiler.key_averages()]
            kernel_s = sum(m for m in kernels if m is not None) / 1e6 / PROFILED_STEPS
        except Exception as exc:  # noqa: BLE001 - as above
            self.why_not = f"torch.profiler: {one_line(exc)}"
            return
        if kernel_s > 0:
            self.busy = kernel_s / self.step_s
        else:
            self.why_not = "the profiler saw no kernels"


def measure(config: RunConfig, data_dir: str | None, device: torch.device) -> Measurement:
    """Train `config` alone on the GPU for a few dozen steps and measure it."""
    free_memory(device)
    window = first_steps(config, data_dir, device)
    peak = torch.cuda.max_memory_reserved(device)
    free_memory(device)
    return Measurement(peak, window.step_s, window.busy, "" if window.busy is not None else window.why_not)


def first_steps(config: RunConfig, data_dir: str | None, device: torch.device) -> _Window:
    """The first steps of `config` through the engine, timed and profiled; no checkpoint, nothing recorded."""
    # A run that starts from a trained vgg-a costs the same per step as one from scratch.
    config = config.replace(init_from_a=False) if config.init_from_a else config
    window = _Window(device)
    try:
        fit(config, on_batch=window.batch_done, data_dir=data_dir)
    except _Enough:
        pass
    return window


def helper_args(args: list[str]) -> list[str]:
    """A helper worker's command line: the parent's with every --workers (auto included, also
    abbreviated or as --workers=N) replaced by --workers 1, so a helper never measures or spawns."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if len(name) >= 4 and "--workers".startswith(name):  # argparse takes --wo.. for --workers
            skip = "=" not in arg
            continue
        kept.append(arg)
    return [*kept, "--workers", "1"]
