"""The numeric precision a run trains and evaluates at: bf16 or fp16 autocast where the hardware has fast
low precision, fp32 elsewhere."""

from __future__ import annotations

import torch


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"  # bf16 autocast is several times slower than fp32 on CPUs without AMX


def autocast(device: torch.device, precision: str, cache: bool = True):
    """Low-precision autocast for bf16/fp16; a no-op context for fp32. `cache=False` for a CUDA graph's
    capture, which must not keep weight casts made outside it."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache)
