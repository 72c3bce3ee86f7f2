"""Where a train step's time goes: torch.profiler's kernels (CUDA) or operators (CPU), by kind.

Used by the GPU suite on the rows its targets are judged on, so that a missed target comes with
the profile that explains it: convolutions and matmuls (the FLOPs), normalisation, elementwise
work, the optimizer, layout copies; and on CUDA how much of the measured step the GPU was busy at
all (the rest is the host launching kernels, or waiting).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from bench.device import kernel_micros, synchronize

# First match wins: kernel and operator names as cuDNN, cuBLAS, Triton (torch.compile) and ATen spell them.
KINDS = (
    ("optimizer", r"foreach|multi_tensor|sgd|adam"),
    ("normalisation", r"batch_?norm|bn_|welford|native_layer_norm"),
    ("convolution", r"conv|cudnn|implicit_gemm|wgrad|dgrad|fprop|winograd|mkldnn"),  # before matmul: implicit gemm
    ("matmul", r"gemm|matmul|addmm|\bmm\b|cutlass|cublas|linear"),
    ("pooling", r"pool"),
    ("layout copy", r"copy|nchw|nhwc|transpose|permute|contiguous"),
    ("loss", r"nll|softmax|cross_entropy"),
    ("elementwise (fused)", r"triton_poi|triton_per|triton_red|triton_"),
    ("elementwise", r"elementwise|relu|threshold|add|mul|fill|zero|where|clamp|reduce|sum|mean"),
)


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, pattern in KINDS:
        if re.search(pattern, lowered):
            return kind
    return "other"


def breakdown(step: Callable[[], None], device: torch.device, step_ms: float, steps: int = 3) -> dict:
    """Milliseconds a step spends in each kind of kernel (CUDA) or operator (CPU), profiled over `steps` steps.

    `step_ms` is the step's unprofiled median time: on CUDA, busy_share is the kernels' total over
    it (below 1, the GPU waits for the host).
    """
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    per_kind: dict[str, float] = {}
    for event in prof.key_averages():
        if cuda:
            micros = kernel_micros(event)
            if micros is None:
                continue
        else:
            if not event.key.startswith("aten::"):
                continue
            micros = event.self_cpu_time_total
        if micros > 0:
            kind = kind_of(event.key)
            per_kind[kind] = per_kind.get(kind, 0.0) + micros / 1e3 / steps
    total = sum(per_kind.values())
    ordered = dict(sorted(per_kind.items(), key=lambda item: -item[1]))
    return {
        "unit": "GPU kernel ms per step" if cuda else "CPU operator self ms per step",
        "ms_per_step": ordered,
        "total_ms": total,
        "step_ms": step_ms,
        "busy_share": total / step_ms if cuda and step_ms else None,
    }
