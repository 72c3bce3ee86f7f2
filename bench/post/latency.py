"""How long a model takes to answer on the CPU, measured so that variants compare like with like.

Every variant gets the same input tensor, contiguous NCHW (PyTorch's default layout and ONNX's),
at each batch size a user serves (BATCHES), timed in turns: one call of each variant per round,
so that a change in the machine's load falls on all of them alike. Each gets the median and a
distribution-free 95 % interval for it (order statistics of a binomial, since latencies on a
shared machine are skewed, not normal).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from scipy import stats

BATCHES = (1, 32)  # one image, and a small served batch
LEVEL = 0.95


@dataclass(frozen=True)
class Timing:
    batch: int
    median_ms: float  # per call (a whole batch)
    low_ms: float  # the LEVEL interval of the median
    high_ms: float
    calls: int

    @property
    def images_per_s(self) -> float:
        return 1000 * self.batch / self.median_ms

    def text(self) -> str:
        return f"{self.median_ms:.3g} [{self.low_ms:.3g}, {self.high_ms:.3g}]"


def median_interval(times: list[float]) -> tuple[float, float, float]:
    """(median, low, high): the order statistics that hold the median with LEVEL confidence, or
    the extremes when there are too few calls for that."""
    ordered = sorted(times)
    n = len(ordered)
    rank = int(stats.binom.ppf((1 - LEVEL) / 2, n, 0.5))  # 1-based rank of the lower bound
    low, high = (ordered[0], ordered[-1]) if rank < 1 else (ordered[rank - 1], ordered[n - rank])
    return statistics.median(ordered), low, high


def time_in_turns(forwards: list[Callable], x: torch.Tensor, rounds: int, warmup: int) -> list[Timing]:
    """Each forward's Timing on `x`, made contiguous NCHW for all of them."""
    x = x.contiguous()
    for forward in forwards:
        for _ in range(warmup):
            forward(x)
    spent: list[list[float]] = [[] for _ in forwards]
    for _ in range(rounds):
        for forward, times in zip(forwards, spent):
            began = time.perf_counter()
            forward(x)
            times.append(1000 * (time.perf_counter() - began))
    return [Timing(len(x), *median_interval(times), rounds) for times in spent]


def batch_of(images: torch.Tensor, batch: int) -> torch.Tensor:
    """`batch` images from `images`, repeated when there are fewer (a tiny test set)."""
    return images[torch.arange(batch) % len(images)]
