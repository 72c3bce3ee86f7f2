"""Timing, memory and FLOP utilisation: the measuring tools every benchmark mode shares."""

from __future__ import annotations

import itertools
import re
import resource
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import torch

from bench import provenance
from bench.device import free_memory, synchronize

TRAIN_FLOPS_PER_FORWARD = 3  # forward + backward (gradients of inputs and of weights)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets, matched against
# torch.cuda.get_device_name in order (the first match wins, so variants come before families).
DATASHEET_BF16_TFLOPS = (
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.5),
    (r"H100|H200|GH200", 989.4),  # SXM: 1,979 with 2:4 sparsity
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"L40\b", 181.0),
    (r"L4\b", 121.0),
    (r"A10\b", 125.0),
    (r"RTX 4090", 165.2),  # fp32 accumulate, as autocast uses
    (r"RTX 3090", 71.0),
)


def step_times(step: Callable[[], None], count: int, device: torch.device) -> list[float]:
    """Seconds of each of `count` calls of `step`.

    On CUDA, events recorded between the steps time them without a host sync inside the loop (a
    sync per step would leave the GPU idle while the next step is launched); the device is
    synchronised before the first step and before the events are read.
    """
    synchronize(device)
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(count + 1)]
        events[0].record()
        for event in events[1:]:
            step()
            event.record()
        synchronize(device)
        return [start.elapsed_time(end) / 1e3 for start, end in itertools.pairwise(events)]
    times, last = [], time.perf_counter()
    for _ in range(count):
        step()
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated, this row"
    # ru_maxrss never goes down: a grid's later rows include the earlier ones and the data of the process.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss * (1 if sys.platform == "darwin" else 1024), "peak RSS of the whole process so far"


T = TypeVar("T")


def halving_on_oom(measure: Callable[[int], T], batch_size: int, device: torch.device) -> tuple[T, int, list[int]]:
    """`measure(batch_size)`, halving the batch after each CUDA out-of-memory error, as timm's benchmark does.

    Returns (result, the batch size that fit, the sizes that ran out of memory). Raises the last
    out-of-memory error when even a batch of one does not fit.
    """
    failed = []
    while True:
        try:
            return measure(batch_size), batch_size, failed
        except torch.cuda.OutOfMemoryError:
            failed.append(batch_size)
            free_memory(device)
            if batch_size == 1:
                raise
            batch_size //= 2


# --- model FLOP utilisation ----------------------------------------------------------------------


def datasheet_peak(device_name: str) -> float | None:
    """The datasheet's dense bf16 FLOP/s of a GPU by its name, or None when it is not in the table."""
    for pattern, tflops in DATASHEET_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops * 1e12
    return None


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 8192, repeats: int = 20) -> float:
    """FLOP/s of an n x n matmul in `dtype` on `device`: the practical peak a model could reach."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    seconds = sum(step_times(lambda: a @ b, repeats, device))
    return 2 * n**3 * repeats / seconds


def device_peaks(device: torch.device, precision: str, n: int) -> dict[str, float | None]:
    measured = matmul_rate(device, DTYPES[precision], n)
    free_memory(device)
    name = provenance.device_name(device)
    return {"device_name": name, "datasheet_bf16_flops": datasheet_peak(name), "matmul_flops": measured}


def mfu(forward_flops: int, batch_size: int, step_seconds: float, peak_flops: float | None) -> float | None:
    """Model FLOP utilisation of a train step: 3x the forward FLOPs per image, over the peak."""
    if peak_flops is None:
        return None
    return TRAIN_FLOPS_PER_FORWARD * forward_flops * batch_size / step_seconds / peak_flops


def utilisation(row: dict, peaks: dict | None) -> dict:
    """The MFU columns of a step row (None off CUDA, where no peak is measured)."""
    peaks = peaks or {}
    step_s = row["train_step_ms"] / 1e3
    return {
        "train_flops_per_s": TRAIN_FLOPS_PER_FORWARD * row["flops"] * row["batch_size"] / step_s,
        "mfu_datasheet_bf16": mfu(row["flops"], row["batch_size"], step_s, peaks.get("datasheet_bf16_flops")),
        "mfu_matmul": mfu(row["flops"], row["batch_size"], step_s, peaks.get("matmul_flops")),
    }
