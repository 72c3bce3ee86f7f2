"""The torch device a `device` setting names ('auto' is CUDA when there is one, else the CPU; a
device this machine does not have is refused in one line), and what measuring on it needs: a sync,
memory given back, a profiled kernel's own time."""

from __future__ import annotations

import gc

import torch

from bench.errors import BenchError


def resolve_device(name: str | torch.device) -> torch.device:
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise BenchError(f"bad device {name!r} ({exc}); use e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device {name!r} asked for but CUDA is not available on this machine; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BenchError(f"device {name!r} asked for but MPS is not available on this machine; use --device cpu")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    """Give back what an abandoned measurement held, so the next starts from an empty device."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def kernel_micros(event) -> float | None:
    """A profiled event's own device microseconds if it is a kernel, else None.

    Kernels are the events with device time of their own; the CPU-side operators are not counted.
    """
    if event.device_type != torch.autograd.DeviceType.CUDA and not _is_kernel(event):
        return None
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)


def _is_kernel(event) -> bool:
    return getattr(event, "self_device_time_total", 0) > 0 and getattr(event, "self_cpu_time_total", 0) == 0
