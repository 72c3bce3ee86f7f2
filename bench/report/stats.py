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
from scipy import integrate, stats
from statsmodels.stats.meta_analysis import effectsize_smd
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05
CONFIDENCE = 1 - ALPHA
POWER = 0.8
MAX_SEEDS = 10_000  # beyond this a difference is, for a benchmark, not there to detect

# Convergence: validation accuracy still rising by this many points per epoch or more, over the
# last CONVERGENCE_WINDOW epochs (or the last third of a longer run), is not a plateau. A study whose
# verdicts rest on smaller differences asks for flatter curves (see slope_threshold).
CONVERGENCE_SLOPE = 0.2
CONVERGENCE_WINDOW = 3
NOT_CONVERGED = "not converged: this ranking may reflect training speed, not capacity"
UNCERTAIN = "convergence uncertain: this ranking may reflect training speed, not capacity"
CONVERGENCE_RULE = (
    f"the slope of validation accuracy over the last {CONVERGENCE_WINDOW} epochs (the last third of longer "
    f"runs) is fitted per seed by least squares, with a {CONFIDENCE:.0%} CI (t over seeds) of its mean; the "
    f"threshold is {CONVERGENCE_SLOPE} points per epoch, or less where the study ranks smaller "
    f"differences: a curve that could still move, over another window of epochs, by more than the "
    f"smallest difference among "
    f"the study's comparisons is not flat enough to rank them, so the threshold is that difference over the "
    f"window's epochs. 'Converged' when the CI's upper end is below the threshold, 'not converged' when its "
    f"lower end is at or above it, 'uncertain' otherwise (and with one seed, which gives no interval)"
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
    seeds_for_power: int | None = None  # per variant: `effect` with POWER at `alpha` (see with_power)
    alpha: float = ALPHA  # what Holm compared this comparison's raw p with (its step's share of ALPHA)

    @property
    def significant(self) -> bool:
        p = self.p if self.p_holm is None else self.p_holm
        return p is not None and p < ALPHA


def compare(values, reference_values, seeds=None, reference_seeds=None, confidence: float = CONFIDENCE) -> Comparison:
    """The variant against the reference: paired over seeds where both have exactly the same seeds
    (a seed fixes the split and the batch order, so the per-seed difference removes their share of
    the noise), Welch's t-test (unequal variances) otherwise.

    Welch's interval is exact for normal seeds at any n >= 2 and widens honestly as n falls; a
    bootstrap at n = 2 would resample two numbers and give an interval far too narrow to trust.
    """
    a, b = np.asarray(values, dtype=float), np.asarray(reference_values, dtype=float)
    paired = (
        seeds is not None
        and reference_seeds is not None
        and len(a) >= 2
        and len(set(seeds)) == len(a)
        and set(seeds) == set(reference_seeds)
        and len(b) == len(a)
    )
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
        return Comparison(
            diff, None, None, None, len(a), len(b), analysis, "every seed gave the same difference", hedges_g=g
        )
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Comparison(
            diff, None, None, None, len(a), len(b), analysis, "every seed gave the same accuracy", hedges_g=g
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nearly equal seeds: scipy's precision note
        result = stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence)
    return Comparison(
        diff,
        float(interval.low),
        float(interval.high),
        float(result.pvalue),
        len(a),
        len(b),
        analysis,
        hedges_g=g,
        effect=_paired_effect(a - b) if paired else g,
    )


def hedges_g(a: np.ndarray, b: np.ndarray) -> float | None:
    """The standardised mean difference with the small-sample correction (Hedges' g)."""
    if min(len(a), len(b)) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return None
    g, _variance = effectsize_smd(a.mean(), a.std(ddof=1), len(a), b.mean(), b.std(ddof=1), len(b))
    return float(g)


def _paired_effect(differences: np.ndarray) -> float:
    """Cohen's d_z: the mean per-seed difference over its standard deviation (the paired test's effect)."""
    return float(differences.mean() / differences.std(ddof=1))


def power(effect: float, n: int, paired: bool, alpha: float = ALPHA) -> float:
    """The power of the two-sided t-test used (one-sample on paired differences, or two equal samples)
    to detect a standardised `effect` with n seeds each: the noncentral t's tail, integrated over the
    variance's chi-square (statsmodels' and scipy's noncentral t give NaN there at one or two degrees
    of freedom and large effects, which bn's report once took as 'enough')."""
    df = n - 1 if paired else 2 * n - 2
    shift = abs(effect) * math.sqrt(n if paired else n / 2)
    critical = stats.t.ppf(1 - alpha / 2, df)

    def rejected(quantile: float) -> float:  # over the variance's quantiles: no df is too large to find
        scale = critical * math.sqrt(stats.chi2.ppf(quantile, df) / df)
        return stats.norm.cdf(shift - scale) + stats.norm.cdf(-shift - scale)

    return min(1.0, integrate.quad(rejected, 0, 1, limit=200)[0])


def seeds_needed(effect: float | None, paired: bool, alpha: float = ALPHA, target: float = POWER) -> int | None:
    """Seeds per variant for the test used to detect `effect` with `target` power at `alpha`
    (two-sided): the smallest n that reaches it, by bisection; None past MAX_SEEDS or for no effect."""
    if effect is None or not math.isfinite(effect) or effect == 0:
        return None

    def enough(n: int) -> bool:
        return power(effect, n, paired, alpha) >= target

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
    """The comparison with the seeds its test would need to detect the observed effect at the α
    Holm's correction held it to."""
    return dataclasses.replace(c, seeds_for_power=seeds_needed(c.effect, c.analysis == "paired", c.alpha))


def holm(comparisons: list[Comparison]) -> list[Comparison]:
    """Holm's step-down adjustment over every comparison of one study that has a p-value."""
    tested = [i for i, c in enumerate(comparisons) if c.p is not None]
    if not tested:
        return comparisons
    _reject, adjusted, _, _ = multipletests([comparisons[i].p for i in tested], alpha=ALPHA, method="holm")
    # Holm's k-th smallest raw p (k from 0) is held to ALPHA / (m - k): the α its verdict used.
    rank = {i: k for k, i in enumerate(sorted(tested, key=lambda i: comparisons[i].p))}
    out = list(comparisons)
    for i, p in zip(tested, adjusted):
        out[i] = dataclasses.replace(
            comparisons[i], p_holm=float(p), comparisons=len(tested), alpha=ALPHA / (len(tested) - rank[i])
        )
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
        text += (
            f"; {c.seeds_for_power} seeds each would detect a difference this size "
            f"with {POWER:.0%} power "
            f"at Holm's α={c.alpha:.3g}"
        )
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
    threshold: float = CONVERGENCE_SLOPE

    @property
    def label(self) -> str:
        return {True: "yes", False: "no", None: "uncertain"}[self.converged]

    @property
    def text(self) -> str:
        if self.slope is None:
            return "convergence unknown: fewer than 2 epochs"
        if self.seeds == 1:
            spread = "one seed, no interval"
        else:
            spread = f"{CONFIDENCE:.0%} CI {self.low:+.2f} to {self.high:+.2f}"
        numbers = (
            f"validation accuracy {self.slope:+.2f} points/epoch over the last {self.window} epochs "
            f"({spread}, n={self.seeds}; threshold {self.threshold:.3g})"
        )
        if self.converged is False:
            return f"{NOT_CONVERGED} ({numbers})"
        if self.converged is None:
            return f"{UNCERTAIN} ({numbers}; more seeds or epochs would tell)"
        return f"converged: {numbers}"


def convergence_window(epochs: int) -> int:
    return max(CONVERGENCE_WINDOW, epochs // 3)


def seed_slopes(curves: pd.DataFrame) -> tuple[dict, int]:
    """Each seed's least-squares slope (validation points per epoch) over the convergence window,
    from curves with columns seed, epoch, val_acc (a fraction), and the window's epochs."""
    slopes, window = {}, 0
    for seed, curve in curves.groupby("seed"):
        curve = curve.sort_values("epoch")
        window = min(convergence_window(int(curve["epoch"].max())), len(curve))
        tail = curve.tail(window)
        if len(tail) >= 2:
            slopes[seed] = float(stats.linregress(tail["epoch"], tail["val_acc"] * 100).slope)
    return slopes, window


def slope_threshold(smallest: float | None, window: int) -> float:
    """The slope below which a curve is flat enough to rank: CONVERGENCE_SLOPE, or less where the
    smallest difference the study's verdicts rest on could be covered within one more window."""
    if smallest is None or not math.isfinite(smallest) or window < 1:
        return CONVERGENCE_SLOPE
    return min(CONVERGENCE_SLOPE, abs(smallest) / window)


def convergence(curves: pd.DataFrame, smallest: float | None = None) -> Convergence:
    """Whether validation accuracy had stopped rising: one slope per seed, then a t interval over
    seeds; the verdict follows the interval, never the mean alone. `smallest`: the smallest
    difference (points) among the study's comparisons, which tightens the threshold."""
    by_seed, window = seed_slopes(curves)
    threshold = slope_threshold(smallest, window)
    if not by_seed:
        return Convergence(None, None, None, None, window, 0, threshold)
    slopes = np.asarray(list(by_seed.values()))
    mean, low, high = float(slopes.mean()), None, None
    if len(slopes) >= 2:
        low = high = mean
        if np.ptp(slopes) > 0:
            interval = stats.ttest_1samp(slopes, 0.0).confidence_interval(CONFIDENCE)
            low, high = float(interval.low), float(interval.high)
    converged = None
    if high is not None and high < threshold:
        converged = True
    elif low is not None and low >= threshold:
        converged = False
    return Convergence(converged, mean, low, high, window, len(slopes), threshold)


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
    return TimeToAccuracy(
        target_pct,
        len(epochs),
        n,
        float(np.mean(epochs)) if epochs else None,
        float(np.mean(seconds)) if seconds else None,
    )
