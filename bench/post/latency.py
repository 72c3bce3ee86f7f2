"""How long a model takes to answer on the CPU, measured so that variants compare like with like.

Every variant gets the same input tensor, contiguous NCHW (PyTorch's default layout and ONNX's),
at each batch size a user serves (BATCHES), timed in turns: one call of each variant per round, in
alternating order (A B C, C B A, ...), so that a change in the machine's load falls on all of them
alike. Each gets the median and a distribution-free 95 % interval for it, and a speed-up against
another is the median of the rounds' paired ratios with its interval: both from
bench.speed_ratio (order statistics of a binomial, since latencies on a shared machine are
skewed, not normal).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bench.speed_ratio import CONFIDENCE, in_turns, paired_ratio
from bench.speed_ratio import median_interval as interval_of_median

BATCHES = (1, 32)  # one image, and a small served batch
LEVEL = CONFIDENCE


@dataclass(frozen=True)
class Timing:
    batch: int
    median_ms: float  # per call (a whole batch)
    low_ms: float  # the LEVEL interval of the median
    high_ms: float
    calls: int
    times_ms: tuple[float, ...] = ()  # each round's call, in round order: paired with other variants' rounds

    @property
    def images_per_s(self) -> float:
        return 1000 * self.batch / self.median_ms

    def text(self) -> str:
        return f"{self.median_ms:.3g} [{self.low_ms:.3g}, {self.high_ms:.3g}]"

    def speedup(self, base: Timing) -> dict:
        """How many times faster than `base` per call: the median of the rounds' paired ratios of
        base's time over this one's, its interval and verdict (bench.speed_ratio.paired_ratio)."""
        return paired_ratio(base.times_ms, self.times_ms)


def median_interval(times: list[float]) -> tuple[float, float, float]:
    """(median, low, high): bench.speed_ratio' LEVEL interval of the median, or the extremes
    when there are too few calls for that."""
    median, low, high = interval_of_median(times, LEVEL)
    return (median, min(times), max(times)) if low is None else (median, low, high)


def time_in_turns(forwards: list[Callable], x: torch.Tensor, rounds: int, warmup: int) -> list[Timing]:
    """Each forward's Timing on `x`, made contiguous NCHW for all of them: `rounds` rounds of one call
    each, in alternating order."""
    x = x.contiguous()
    for forward in forwards:
        for _ in range(warmup):
            forward(x)
    spent: list[list[float]] = [[] for _ in forwards]
    for number in range(1, rounds + 1):
        for forward, times in in_turns(list(zip(forwards, spent)), number):
            began = time.perf_counter()
            forward(x)
            times.append(1000 * (time.perf_counter() - began))
    return [Timing(len(x), *median_interval(times), rounds, tuple(times)) for times in spent]


def batch_of(images: torch.Tensor, batch: int) -> torch.Tensor:
    """`batch` images from `images`, repeated when there are fewer (a tiny test set)."""
    return images[torch.arange(batch) % len(images)]
