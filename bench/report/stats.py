"""The statistics of a report: each variant against the reference, Holm's correction over a study's
comparisons, effect size and the seeds a difference needs, convergence and time to accuracy.

Libraries do the arithmetic (scipy's t-tests and their intervals, statsmodels' Holm, Hedges' g and
power); this module decides which analysis applies and what may honestly be said about it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.meta_analysis import effectsize_smd
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

ALPHA = 0.05
CONFIDENCE = 1 - ALPHA
POWER = 0.8
MAX_SEEDS = 10_000  # beyond this a difference is, for a benchmark, not there to detect

# Convergence: validation accuracy still rising by this many points per epoch or more, over the
# last CONVERGENCE_WINDOW epochs (or the last third of a longer run), is not a plateau.
CONVERGENCE_SLOPE = 0.2
CONVERGENCE_WINDOW = 3
NOT_CONVERGED = "not converged: this ranking may reflect training speed, not capacity"
CONVERGENCE_RULE = (
    f"a variant has converged when the slope of its validation accuracy over the last "
    f"{CONVERGENCE_WINDOW} epochs (the last third of longer runs), fitted per seed by least squares, has a "
    f"mean over seeds below {CONVERGENCE_SLOPE} points per epoch with the upper end of its {CONFIDENCE:.0%} CI "
    f"(t over seeds) below it too; a mean at or above it is 'not converged'; a mean below it with a CI "
    f"reaching it is 'uncertain'"
)


# --- one variant against the reference --------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A variant's test accuracy minus the reference's, in percentage points."""

    diff: float
    low: float | None
    high: float | None
    p: float | None
    n: int
    n_ref: int
    analysis: str  # "paired" (per-seed differences) or "Welch" (two independent samples)
    why_no_interval: str | None = None
    p_holm: float | None = None  # set once every comparison of the study is known
    comparisons: int = 1  # how many comparisons Holm's correction was over
    hedges_g: float | None = None
    effect: float | None = None  # standardised, as the test sees it: d_z paired, Hedges' g for Welch
    seeds_for_power: int | None = None  # per variant, to detect `effect` with POWER at ALPHA (see with_power)

    @property
    def significant(self) -> bool:
        p = self.p if self.p_holm is None else self.p_holm
        return p is not None and p < ALPHA


def compare(values, reference_values, seeds=None, reference_seeds=None,
            confidence: float = CONFIDENCE) -> Comparison:
    """The variant against the reference: paired over seeds where both have exactly the same seeds
    (a seed fixes the split and the batch order, so the per-seed difference removes their share of
    the noise), Welch's t-test (unequal variances) otherwise.

    Welch's interval is exact for normal seeds at any n >= 2 and widens honestly as n falls; a
    bootstrap at n = 2 would resample two numbers and give an interval far too narrow to trust.
    """
    a, b = np.asarray(values, dtype=float), np.asarray(reference_values, dtype=float)
    paired = (seeds is not None and reference_seeds is not None and len(a) >= 2
              and len(set(seeds)) == len(a) and set(seeds) == set(reference_seeds) and len(b) == len(a))
    if paired:
        order, ref_order = np.argsort(list(map(str, seeds))), np.argsort(list(map(str, reference_seeds)))
        a, b = a[order], b[ref_order]
    diff = a.mean() - b.mean()
    analysis = "paired" if paired else "Welch"
    g = hedges_g(a, b)
    if min(len(a), len(b)) < 2:
        side = "one seed" + (" of each" if max(len(a), len(b)) < 2 else "")
        return Comparison(diff, None, None, None, len(a), len(b), analysis, side, hedges_g=g)
    if paired and np.allclose(a - b, (a - b)[0], rtol=0, atol=1e-9):
        return Comparison(diff, None, None, None, len(a), len(b), analysis,
                          "every seed gave the same difference", hedges_g=g)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Comparison(diff, None, None, None, len(a), len(b), analysis, "every seed gave the same accuracy",
                          hedges_g=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nearly equal seeds: scipy's precision note
        result = stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence)
    return Comparison(diff, float(interval.low), float(interval.high), float(result.pvalue), len(a), len(b),
                      analysis, hedges_g=g, effect=_paired_effect(a - b) if paired else g)


def hedges_g(a: np.ndarray, b: np.ndarray) -> float | None:
    """The standardised mean difference with the small-sample correction (Hedges' g)."""
    if min(len(a), len(b)) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return None
    g, _variance = effectsize_smd(a.mean(), a.std(ddof=1), len(a), b.mean(), b.std(ddof=1), len(b))
    return float(g)


def _paired_effect(differences: np.ndarray) -> float:
    """Cohen's d_z: the mean per-seed difference over its standard deviation (the paired test's effect)."""
    return float(differences.mean() / differences.std(ddof=1))


def seeds_needed(effect: float | None, paired: bool, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Seeds per variant for the test used to detect `effect` with `power` (two-sided, uncorrected):
    the smallest n at which statsmodels' power of that t-test reaches it, found by bisection (its
    solve_power fails where the answer is a handful of seeds); None past MAX_SEEDS or for no effect."""
    if effect is None or not math.isfinite(effect) or effect == 0:
        return None
    solver = TTestPower() if paired else TTestIndPower()

    def enough(n: int) -> bool:
        # statsmodels' noncentral t gives NaN deep in its upper tail, where the power is ~1.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return not solver.power(abs(effect), n, alpha) < power

    if not enough(MAX_SEEDS):
        return None
    low, high = 1, 2  # low: too few (one seed has no t-test); high: enough, once found
    while not enough(high):
        low, high = high, min(2 * high, MAX_SEEDS)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def with_power(c: Comparison) -> Comparison:
    """The comparison with the seeds its test would need to detect the observed effect."""
    return dataclasses.replace(c, seeds_for_power=seeds_needed(c.effect, c.analysis == "paired"))


def holm(comparisons: list[Comparison]) -> list[Comparison]:
    """Holm's step-down adjustment over every comparison of one study that has a p-value."""
    tested = [i for i, c in enumerate(comparisons) if c.p is not None]
    if not tested:
        return comparisons
    _reject, adjusted, _, _ = multipletests([comparisons[i].p for i in tested], alpha=ALPHA, method="holm")
    out = list(comparisons)
    for i, p in zip(tested, adjusted):
        out[i] = dataclasses.replace(comparisons[i], p_holm=float(p), comparisons=len(tested))
    return out


def verdict(name: str, reference_name: str, c: Comparison) -> str:
    """One plain sentence: better, worse, or no significant difference, with the numbers."""
    n = f"n={c.n}" if c.n == c.n_ref else f"n={c.n} vs {c.n_ref}"
    if c.p is None:
        why = f"paired over seeds: {c.why_no_interval}" if c.analysis == "paired" else c.why_no_interval
        return f"{name} vs {reference_name}: {c.diff:+.2f} points; no interval can be given ({why}, {n})"
    detail = f"{CONFIDENCE:.0%} CI {c.low:.2f} to {c.high:.2f}, p={format_p(c.p)}"
    if c.analysis == "paired":
        detail = f"paired over seeds, {detail}"
    if c.comparisons > 1:
        detail += f", Holm p={format_p(c.p_holm)} over {c.comparisons} comparisons"
    if c.significant:
        word = "better" if c.diff > 0 else "worse"
        return f"{name} {word} than {reference_name} by {abs(c.diff):.2f} points ({detail}, {n})"
    text = f"{name} vs {reference_name}: no significant difference at {n} ({c.diff:+.2f} points, {detail})"
    if c.seeds_for_power is not None:
        text += f"; {c.seeds_for_power} seeds each would detect a difference this size with {POWER:.0%} power"
    return text


def format_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# --- convergence ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Convergence:
    converged: bool | None  # None: uncertain, or too few epochs to say
    slope: float | None  # mean over seeds, validation accuracy points per epoch
    low: float | None
    high: float | None
    window: int  # epochs the slope is fitted over
    seeds: int

    @property
    def label(self) -> str:
        return {True: "yes", False: "no", None: "uncertain"}[self.converged]

    @property
    def text(self) -> str:
        if self.slope is None:
            return "convergence unknown: fewer than 2 epochs"
        if self.low is None:
            spread = "one seed, no interval" if self.seeds == 1 else "every seed gave the same slope"
        else:
            spread = f"{CONFIDENCE:.0%} CI {self.low:+.2f} to {self.high:+.2f}"
        numbers = (f"validation accuracy {self.slope:+.2f} points/epoch over the last {self.window} epochs "
                   f"({spread}, n={self.seeds}; threshold {CONVERGENCE_SLOPE})")
        if self.converged is False:
            return f"{NOT_CONVERGED} ({numbers})"
        if self.converged is None:
            return f"convergence uncertain: {numbers}; more seeds or epochs would tell"
        return f"converged: {numbers}"


def convergence_window(epochs: int) -> int:
    return max(CONVERGENCE_WINDOW, epochs // 3)


def convergence(curves: pd.DataFrame) -> Convergence:
    """Whether validation accuracy had stopped rising, from curves with columns seed, epoch, val_acc
    (a fraction): one least-squares slope per seed over the window, then a t interval over seeds."""
    slopes, window = [], 0
    for _seed, curve in curves.groupby("seed"):
        curve = curve.sort_values("epoch")
        window = min(convergence_window(int(curve["epoch"].max())), len(curve))
        tail = curve.tail(window)
        if len(tail) >= 2:
            slopes.append(stats.linregress(tail["epoch"], tail["val_acc"] * 100).slope)
    if not slopes:
        return Convergence(None, None, None, None, window, 0)
    slopes = np.asarray(slopes)
    mean, low, high = float(slopes.mean()), None, None
    if len(slopes) >= 2 and np.ptp(slopes) > 0:
        interval = stats.ttest_1samp(slopes, 0.0).confidence_interval(CONFIDENCE)
        low, high = float(interval.low), float(interval.high)
    if mean >= CONVERGENCE_SLOPE:
        converged = False
    else:
        converged = True if high is None or high < CONVERGENCE_SLOPE else None
    return Convergence(converged, mean, low, high, window, len(slopes))


# --- time to accuracy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeToAccuracy:
    target_pct: float
    reached: int  # seeds that reached the target
    seeds: int
    epochs: float | None  # mean over the seeds that reached it
    seconds: float | None  # training seconds (evaluation excluded), mean over the seeds that reached it

    @property
    def reached_text(self) -> str:
        return f"{self.reached}/{self.seeds}"


def time_to_accuracy(curves: pd.DataFrame, target_pct: float) -> TimeToAccuracy:
    """DAWNBench's measure per seed: the first epoch whose validation accuracy reaches the target, and
    the training seconds spent until then (columns seed, epoch, val_acc, epoch_seconds)."""
    epochs, seconds = [], []
    for _seed, curve in curves.groupby("seed"):
        curve = curve.sort_values("epoch")
        spent = curve["epoch_seconds"].fillna(0).cumsum()
        hit = curve["val_acc"] * 100 >= target_pct
        if hit.any():
            first = hit.to_numpy().argmax()
            epochs.append(float(curve["epoch"].iloc[first]))
            seconds.append(float(spent.iloc[first]))
    n = curves["seed"].nunique()
    return TimeToAccuracy(target_pct, len(epochs), n, float(np.mean(epochs)) if epochs else None,
                          float(np.mean(seconds)) if seconds else None)
