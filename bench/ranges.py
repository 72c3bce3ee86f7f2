"""Allowed ranges of numbers, as data: what a run's settings, the model registry and the data loader
check values against (torch-free, so that reading a config needs no torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """The allowed values of a number: low to high (None: no bound), each end open or closed."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value) -> bool:
        too_low = value <= self.low if self.low_open else value < self.low
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return not (too_low or too_high)

    def __str__(self) -> str:
        left = "(" if self.low_open else "["
        right = "inf)" if self.high is None else f"{self.high})" if self.high_open else f"{self.high}]"
        return f"{left}{self.low}, {right}"


# Ranges that the model registry and the data loader check too, for callers that bypass RunConfig.
WIDTH = Interval(0, 4, low_open=True)
DROPOUT = Interval(0, 1, high_open=True)
IMAGE_SIZE = Interval(8, 1024)
