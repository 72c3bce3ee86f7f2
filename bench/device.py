"""The torch device a `device` setting names: 'auto' is CUDA when there is one, else the CPU; a
device this machine does not have is refused in one line."""

from __future__ import annotations

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
