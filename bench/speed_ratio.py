"""Speed ratios that survive a noisy machine: the one implementation every speed comparison uses.

A comparison runs as many short rounds, one measurement of each side a round, in alternating order
(A B, B A, ...; `in_turns`), so that a machine whose other work comes and goes slows both sides of a
round alike. The ratio is the median over rounds of the paired ratios (`paired_ratio`), with a
distribution-free CONFIDENCE interval for that median from order statistics (`median_interval`: no
assumption on the noise's shape, which on a shared machine is skewed), and the machine's load
average before and after (`load`) beside it. Where the interval reaches 1 the ratio is "not
measurable" on that machine at that time: the interval is wider than the claim that one side is faster.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from typing import TypeVar

from scipy import stats

CONFIDENCE = 0.95
LEAST_ROUNDS = 6  # the fewest rounds whose extremes bound the median with CONFIDENCE (1 - 2 / 2**6 = 96.9 %)

T = TypeVar("T")


def in_turns(sides: Sequence[T], round_number: int) -> list[T]:
    """The order of the sides in round `round_number` (1-based): as given in odd rounds, reversed in
    even ones, so that no side always goes first (or last)."""
    return list(sides) if round_number % 2 else list(sides)[::-1]


def load() -> float:
    """The machine's 1-minute load average now: the other work the measurement shared it with."""
    return os.getloadavg()[0]


def median_interval(
    values: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float | None, float | None]:
    """(median, low, high): the k-th smallest and k-th largest of n values bound their median with
    probability 1 - 2 P(Bin(n, 1/2) < k); low and high are None when n is too small for `confidence`
    (fewer than LEAST_ROUNDS at 95 %)."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values: a median needs at least one")
    k = int(stats.binom.ppf((1 - confidence) / 2, n, 0.5))  # 1-based rank of the lower bound
    if k < 1:
        return statistics.median(ordered), None, None
    return statistics.median(ordered), ordered[k - 1], ordered[n - k]


def paired_ratio(
    numerators: Sequence[float], denominators: Sequence[float], loads: Sequence[float] | None = None
) -> dict:
    """The median of the rounds' ratios numerators[i] / denominators[i] (one pair a round), its
    CONFIDENCE interval, the rounds, the load (before, after) and the verdict in words:
    "median 1.71x (95 % interval 1.55–1.80, 12 rounds, load 0.9–1.4)", or "not measurable here: ..."
    when the interval reaches 1 or there are too few rounds for one."""
    if len(numerators) != len(denominators):
        raise ValueError(f"paired ratios need pairs: {len(numerators)} numerators, {len(denominators)} denominators")
    ratios = [a / b for a, b in zip(numerators, denominators)]
    median, low, high = median_interval(ratios)
    n = len(ratios)
    load_text = f", load {'–'.join(f'{x:.1f}' for x in loads)}" if loads else ""
    if low is None:
        verdict = (
            f"not measurable here: {n} rounds give no {CONFIDENCE * 100:.0f} % interval "
            f"(median {median:.2f}x{load_text}; {LEAST_ROUNDS} rounds at least)"
        )
    else:
        interval = f"{low:.2f}–{high:.2f}"
        verdict = (
            f"not measurable here: interval {interval} reaches 1x (median {median:.2f}x, {n} rounds{load_text})"
            if low <= 1 <= high
            else f"median {median:.2f}x ({CONFIDENCE * 100:.0f} % interval {interval}, {n} rounds{load_text})"
        )
    return {
        "ratio": median,
        "ratio_low": low,
        "ratio_high": high,
        "rounds": n,
        "ratio_verdict": verdict,
        **({"load_average_1min": list(loads)} if loads else {}),
    }


def rows_ratio(
    rows: Sequence[dict],
    side: str,
    name: str,
    against: str,
    *,
    value: str = "images_per_s",
    round_key: str = "round",
    loads: Sequence[float] | None = None,
) -> dict:
    """`paired_ratio` of measurement rows (one a side a round): the rows whose `side` is `name` over those
    whose `side` is `against`, paired by `round_key`, on `value`; rounds lacking either side are left out."""
    by_round: dict = {}
    for row in rows:
        by_round.setdefault(row[round_key], {})[row[side]] = row[value]
    pairs = [pair for _, pair in sorted(by_round.items()) if name in pair and against in pair]
    return paired_ratio([pair[name] for pair in pairs], [pair[against] for pair in pairs], loads)
