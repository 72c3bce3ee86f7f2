"""The report's statistics on synthetic run tables whose truth is known: error rates over many
simulated studies, Holm against its definition, pairing, effect size, convergence and time to
accuracy. No MLflow: these are the numbers the report's verdicts rest on."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

from bench.errors import BenchError
from bench.report import build, compare, confirm, published_figures, reference, render, stats, variant_rows
from bench.run import studies


@pytest.fixture(autouse=True)
def no_full_collections(monkeypatch):
    """statsmodels' multipletests runs gc.collect() on every call: 0.6 s in a process holding torch,
    minutes over thousands of simulated studies. Skipping it changes no number."""
    monkeypatch.setattr(gc, "collect", lambda *args: 0)


SIMULATED = 600  # studies per error-rate check: binomial SE of a 5 % rate is 0.9 %, of 80 % 1.6 %


def runs(accuracies: dict[str, list[float]], seeds: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """A run table as bench.report.read gives it: test accuracies as fractions, one row per seed."""
    return pd.DataFrame(
        [
            {
                "variant": v,
                "seed": (seeds or {}).get(v, range(len(accs)))[i],
                "model": "vgg-a",
                "batch_norm": False,
                "params": 1.0,
                "flops": 1.0,
                "test_acc": acc / 100,
                "best_val_acc": acc / 100,
                "train_seconds": 1.0,
                "images_per_s": 1.0,
            }
            for v, accs in accuracies.items()
            for i, acc in enumerate(accs)
        ]
    )


def simulated_study(
    rng, variants: int, seeds: int, planted: float, seed_sd: float, noise_sd: float, shared: bool = True
):
    """Test accuracies (points) of a reference and `variants` others: a seed's split and batch order
    shift a run by seed_sd (alike for every variant at that seed when `shared`, as in this harness), each
    run adds its own noise (noise_sd); the first variant is better by `planted` points, the others equal."""

    def seed_effect():
        return common if shared else rng.normal(0, seed_sd, seeds)

    common = rng.normal(0, seed_sd, seeds)
    reference = 85 + seed_effect() + rng.normal(0, noise_sd, seeds)
    others = [85 + (planted if k == 0 else 0) + seed_effect() + rng.normal(0, noise_sd, seeds) for k in range(variants)]
    return reference, others


def study_comparisons(reference, others, paired: bool) -> list[stats.Comparison]:
    seeds = list(range(len(reference)))
    other_seeds = seeds if paired else [s + 1000 for s in seeds]  # no seed in common: Welch
    return stats.holm([stats.compare(o, reference, other_seeds, seeds) for o in others])


# --- error rates over many simulated studies ------------------------------------------------------


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "welch"])
def test_absent_differences_are_found_at_most_at_the_stated_rate(paired):
    rng = np.random.default_rng(1)
    raw_hits = family_hits = 0
    for _ in range(SIMULATED):
        # Welch's test is for seeds that do not pair: the truth it is checked on has none.
        reference, others = simulated_study(
            rng, variants=4, seeds=5, planted=0.0, seed_sd=0.5, noise_sd=0.3, shared=paired
        )
        comparisons = study_comparisons(reference, others, paired)
        assert all(c.analysis == ("paired" if paired else "Welch") for c in comparisons)
        raw_hits += sum(c.p < stats.ALPHA for c in comparisons)
        family_hits += any(c.significant for c in comparisons)
    # Each raw test is calibrated (about alpha of the null comparisons reach p < alpha)...
    raw_rate = raw_hits / (4 * SIMULATED)
    assert abs(raw_rate - stats.ALPHA) < 3 * np.sqrt(stats.ALPHA * (1 - stats.ALPHA) / (4 * SIMULATED))
    # ...and Holm keeps the chance of any false verdict in a study of 4 comparisons at alpha or below,
    # where four uncorrected tests would give about 1 - 0.95^4 = 19 %.
    assert family_hits / SIMULATED <= stats.ALPHA + 3 * np.sqrt(stats.ALPHA * (1 - stats.ALPHA) / SIMULATED)


def test_a_planted_difference_is_found_with_the_stated_power_at_the_stated_seeds():
    planted, seed_sd, noise_sd = 0.6, 0.5, 0.3
    # The truth: per-seed differences have sd noise_sd * sqrt(2), so d_z = planted / that.
    seeds = stats.seeds_needed(planted / (noise_sd * np.sqrt(2)), paired=True)
    assert 4 <= seeds <= 12
    rng = np.random.default_rng(2)
    found = 0
    for _ in range(SIMULATED):
        reference, (better,) = simulated_study(
            rng, variants=1, seeds=seeds, planted=planted, seed_sd=seed_sd, noise_sd=noise_sd
        )
        (c,) = study_comparisons(reference, [better], paired=True)
        found += c.significant and c.diff > 0
    # At least the promised power (the count rounds up), and not wildly above it.
    assert stats.POWER - 3 * 0.016 <= found / SIMULATED <= 0.95


def test_pairing_finds_what_welch_misses_when_seeds_share_noise():
    """The same planted difference under strong seed-to-seed noise shared by the variants: each test
    finds it at the rate its own power promises, and the paired one, which the shared split and batch
    order license, far more often."""
    planted, seed_sd, noise_sd, seeds, studies = 0.5, 1.0, 0.2, 5, 400
    rng = np.random.default_rng(3)
    paired_found = welch_found = 0
    for _ in range(studies):
        reference, (better,) = simulated_study(
            rng, variants=1, seeds=seeds, planted=planted, seed_sd=seed_sd, noise_sd=noise_sd
        )
        paired_found += study_comparisons(reference, [better], paired=True)[0].significant
        welch_found += study_comparisons(reference, [better], paired=False)[0].significant
    paired_power = TTestPower().power(planted / (noise_sd * np.sqrt(2)), seeds, stats.ALPHA)
    assert abs(paired_found / studies - paired_power) < 3 * np.sqrt(paired_power * (1 - paired_power) / studies)
    # Welch's test sees the seed noise as spread (and, its samples being correlated, is conservative).
    welch_power = TTestIndPower().power(planted / np.hypot(seed_sd, noise_sd), seeds, stats.ALPHA)
    assert welch_found / studies < welch_power + 3 * np.sqrt(welch_power * (1 - welch_power) / studies) < 0.3
    assert paired_power > 0.8


# --- which analysis, and the library's numbers ------------------------------------------------------


def test_paired_only_where_every_seed_is_present_for_both():
    ref, var = [84.0, 85.5, 83.2], [84.9, 86.1, 84.5]
    same = variant_rows.summarize(runs({"ref": ref, "v": var}), reference_name="ref").set_index("variant").loc["v"]
    assert same["analysis"] == "paired"
    assert same["p_value"] == pytest.approx(scipy_stats.ttest_rel(var, ref).pvalue)
    low, high = scipy_stats.ttest_rel(var, ref).confidence_interval(0.95)
    assert (same["ci_low_pts"], same["ci_high_pts"]) == pytest.approx((low, high))
    assert "paired over seeds" in same["verdict"]
    # Seeds given in another order still pair seed with seed.
    shuffled = variant_rows.summarize(runs({"ref": ref, "v": var[::-1]}, {"v": [2, 1, 0]}), reference_name="ref")
    assert shuffled.set_index("variant").loc["v", "p_value"] == pytest.approx(same["p_value"])
    # One seed missing from the variant: no complete pairs, so Welch's test on what there is.
    partial = (
        variant_rows.summarize(runs({"ref": ref, "v": var[:2]}), reference_name="ref").set_index("variant").loc["v"]
    )
    assert partial["analysis"] == "Welch"
    assert partial["p_value"] == pytest.approx(scipy_stats.ttest_ind(var[:2], ref, equal_var=False).pvalue)


def test_holm_adjusts_as_its_definition_says():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    comparisons = stats.holm([stats.Comparison(0.0, 0.0, 0.0, q, 3, 3, "Welch") for q in p])
    adjusted = [c.p_holm for c in comparisons]
    assert adjusted == pytest.approx(multipletests(p, method="holm")[1])
    # By the definition: sort ascending, multiply the i-th smallest (from 0) by m - i, keep the running
    # maximum, cap at 1, and put each back in its place.
    m, order = len(p), np.argsort(p)
    by_hand = np.minimum(1, np.maximum.accumulate([(m - i) * p[j] for i, j in enumerate(order)]))
    expected = np.empty(m)
    expected[order] = by_hand
    assert adjusted == pytest.approx(expected)
    assert [c.comparisons for c in comparisons] == [5] * 5
    # 0.04 and 0.03 are significant alone but not after the correction.
    assert [c.significant for c in comparisons] == [True, False, False, True, False]


def test_the_study_table_shows_raw_and_holm_p_and_judges_by_holm():
    ref = [85.0, 85.4, 84.8, 85.2]
    table = variant_rows.summarize(
        runs({"ref": ref, "a": [85.6, 85.9, 85.3, 85.8], "b": [85.1, 85.3, 84.9, 85.2], "c": [84.9, 85.6, 84.7, 85.4]}),
        reference_name="ref",
    ).set_index("variant")
    p = table.loc[["a", "b", "c"], "p_value"].tolist()
    assert table.loc[["a", "b", "c"], "p_holm"].tolist() == pytest.approx(multipletests(p, method="holm")[1])
    assert "Holm p=" in table.loc["a", "verdict"] and "over 3 comparisons" in table.loc["a", "verdict"]
    headers, _rows = render.display_rows(table.reset_index())
    assert {"p", "Holm p", "Hedges g", "test"} <= set(render.comparison_rows(table.reset_index())[0])
    assert "Holm p" in headers


def test_hedges_g_and_the_seeds_a_difference_needs():
    a, b = np.array([85.0, 86.0, 87.0]), np.array([84.0, 85.0, 86.0])
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    correction = 1 - 3 / (4 * (len(a) + len(b) - 2) - 1)  # Hedges' small-sample factor
    assert stats.hedges_g(a, b) == pytest.approx((a.mean() - b.mean()) / pooled * correction)
    # The seeds needed give the stated power and one seed fewer would not (paired test, d_z = 1).
    n = stats.seeds_needed(1.0, paired=True)
    power = TTestPower().power(effect_size=1.0, nobs=n, alpha=stats.ALPHA)
    assert power >= stats.POWER > TTestPower().power(effect_size=1.0, nobs=n - 1, alpha=stats.ALPHA)
    assert stats.seeds_needed(0.0, paired=False) is None  # no difference: no number of seeds finds it
    assert stats.seeds_needed(1e-4, paired=False) is None  # beyond any benchmark's reach


# --- convergence --------------------------------------------------------------------------------------


def curves(
    variant_slopes: dict[str, float],
    epochs: int = 8,
    seeds: int = 3,
    noise: float = 0.05,
    seconds: float = 10.0,
    start: float = 70.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Validation curves (fractions) that rise by the given points per epoch, with noise."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        [
            {
                "variant": v,
                "seed": s,
                "epoch": e,
                "val_acc": (start + slope * e + rng.normal(0, noise)) / 100,
                "epoch_seconds": seconds,
            }
            for v, slope in variant_slopes.items()
            for s in range(seeds)
            for e in range(1, epochs + 1)
        ]
    )


def test_a_still_rising_curve_is_flagged_and_a_flat_one_is_not():
    rising = stats.convergence(curves({"v": 1.0}, noise=0.3))
    assert rising.converged is False and rising.slope == pytest.approx(1.0, abs=0.3)
    assert rising.text.startswith(stats.NOT_CONVERGED) and rising.window == 3
    flat = stats.convergence(curves({"v": 0.0}))
    assert flat.converged is True and flat.high < stats.CONVERGENCE_SLOPE
    # Below the threshold on average, but too noisy across seeds to tell: neither verdict is claimed.
    seeds_apart = pd.concat(
        [curves({"v": slope}, seeds=1, noise=0).assign(seed=k) for k, slope in enumerate((-0.2, 0.1, 0.4))]
    )
    unsure = stats.convergence(seeds_apart)  # mean slope 0.1, but one seed still climbs 0.4 points/epoch
    assert unsure.converged is None and unsure.text.startswith("convergence uncertain")
    # The window is the last third of a long run, so an early climb does not count against a plateau.
    long = curves({"v": 0.0}, epochs=30)
    long.loc[long["epoch"] <= 10, "val_acc"] -= 0.05
    assert stats.convergence(long).converged is True and stats.convergence(long).window == 10


def test_verdicts_of_unconverged_variants_say_so():
    # Differences of 2 points: the threshold stays CONVERGENCE_SLOPE (smaller ones tighten it, see below).
    accuracies = {"ref": [85.0, 85.2, 84.9], "slow": [87.3, 87.1, 87.4], "fine": [87.1, 87.0, 87.3]}
    table = variant_rows.summarize(
        runs(accuracies), reference_name="ref", curves=curves({"ref": 0.0, "slow": 1.0, "fine": 0.0})
    ).set_index("variant")
    assert table.loc["slow", "converged"] == "no"
    assert table.loc["slow", "verdict"].endswith(f"; {stats.NOT_CONVERGED}")
    assert stats.NOT_CONVERGED not in table.loc["fine", "verdict"] and table.loc["fine", "converged"] == "yes"
    headers, rows = render.display_rows(table.reset_index())
    column = headers.index("converged (val pts/ep)")
    assert [r[column].split(" ")[0] for r in rows] == ["yes", "no", "yes"]
    assert any(stats.NOT_CONVERGED in line for line in render.verdict_lines(table.reset_index()))
    assert build.convergence_tags(table.reset_index())["bench.not_converged"] == "slow"

    # An unconverged reference puts every comparison in doubt, and its own line says so.
    table = variant_rows.summarize(
        runs(accuracies), reference_name="ref", curves=curves({"ref": 1.0, "slow": 1.0, "fine": 0.0})
    ).set_index("variant")
    assert table.loc["fine", "verdict"].endswith(f"the reference ref is {stats.NOT_CONVERGED}")
    assert render.verdict_lines(table.reset_index())[0].startswith(f"ref (reference): {stats.NOT_CONVERGED}")


# --- time to accuracy -----------------------------------------------------------------------------------


def test_time_to_accuracy_is_the_first_epoch_at_the_target():
    table = pd.DataFrame(
        {
            "seed": [0] * 4 + [1] * 4 + [2] * 4,
            "epoch": [1, 2, 3, 4] * 3,
            "val_acc": [0.70, 0.79, 0.81, 0.80, 0.75, 0.78, 0.79, 0.83, 0.60, 0.65, 0.70, 0.72],
            "epoch_seconds": [10.0, 12.0, 11.0, 10.0] * 3,
        }
    )
    t = stats.time_to_accuracy(table, 80.0)
    assert (t.reached, t.seeds) == (2, 3)
    assert t.epochs == pytest.approx((3 + 4) / 2)  # seed 0 at epoch 3 (dipping after), seed 1 at epoch 4
    assert t.seconds == pytest.approx((33 + 43) / 2)
    assert stats.time_to_accuracy(table, 90.0).epochs is None

    summary = variant_rows.summarize(runs({"v": [80.0, 81.0, 79.0]}), curves=table.assign(variant="v"), target_pct=80.0)
    headers, rows = render.display_rows(summary)
    assert rows[0][headers.index("epochs to val 80%")] == "3.5 (2/3 seeds)"
    assert rows[0][headers.index("train s to val 80%")] == "38 (2/3 seeds)"


# --- issue 28: verdicts that follow the numbers ------------------------------------------------------


def seed_curves(slopes: list[float], epochs: int = 30, start: float = 70.0) -> pd.DataFrame:
    """One noiseless curve per seed, each rising by its own slope (points per epoch)."""
    return pd.concat(
        [
            curves({"v": slope}, epochs=epochs, seeds=1, noise=0, start=start).assign(seed=k)
            for k, slope in enumerate(slopes)
        ]
    )


def test_the_convergence_verdict_follows_its_interval_not_its_mean():
    # bn's vgg-e-bn: a mean of +0.21 with a CI from below to above the threshold is uncertain,
    # not "not converged".
    spread = stats.convergence(seed_curves([-0.05, 0.21, 0.47]))
    assert spread.slope == pytest.approx(0.21) and spread.low < stats.CONVERGENCE_SLOPE < spread.high
    assert spread.converged is None and spread.text.startswith(stats.UNCERTAIN)
    # Only a lower end at or above the threshold says "not converged".
    assert stats.convergence(seed_curves([0.3, 0.35, 0.4])).converged is False
    # One seed gives no interval: uncertain, whatever its slope.
    assert stats.convergence(seed_curves([0.0])).converged is None


def test_a_curve_that_can_still_move_past_the_ranked_difference_is_not_converged():
    # conv1's vgg-c: slope CI about +0.01 to +0.18 points an epoch, over a 10-epoch window, while the
    # difference the study ranks is 0.27 points: up to 1.8 points still to come, so not flat enough.
    rising = seed_curves([0.02, 0.08, 0.11, 0.14, 0.10])
    assert stats.convergence(rising).converged is True  # against the fixed threshold alone
    judged = stats.convergence(rising, smallest=0.27)
    assert judged.threshold == pytest.approx(0.027) and judged.converged is not True
    assert "threshold 0.027" in judged.text


def test_an_uncertain_variant_carries_its_caveat_into_the_verdict():
    accuracies = {"ref": [85.0, 85.2, 84.9], "unsure": [87.3, 87.1, 87.4]}
    table = variant_rows.summarize(
        runs(accuracies),
        reference_name="ref",
        curves=pd.concat([curves({"ref": 0.0}), seed_curves([-0.2, 0.1, 0.4], epochs=8).assign(variant="unsure")]),
    )
    table = table.set_index("variant")
    assert table.loc["unsure", "converged"] == "uncertain"
    assert table.loc["unsure", "verdict"].endswith(f"; {stats.UNCERTAIN}")


def test_power_is_never_taken_from_a_nan():
    # bn's vgg-b-bn: d_z this large at n=2 is where statsmodels' noncentral t returns NaN.
    effect = 9.89 / np.sqrt(2)
    assert np.isnan(TTestPower().power(effect_size=effect * np.sqrt(2), nobs=2, alpha=stats.ALPHA))
    by_simulation = np.mean(
        [
            scipy_stats.ttest_1samp(sample, 0).pvalue < stats.ALPHA
            for sample in np.random.default_rng(0).normal(effect, 1, (20_000, 2))
        ]
    )
    assert stats.power(effect, 2, paired=True) == pytest.approx(by_simulation, abs=0.01)
    assert stats.power(effect, 2, paired=True) < stats.POWER
    assert stats.seeds_needed(effect, paired=True) == 3


def test_seeds_for_power_are_at_the_alpha_holm_held_the_comparison_to():
    comparisons = stats.holm([stats.Comparison(1.0, 0, 2, p, 3, 3, "paired", effect=1.5) for p in (0.001, 0.02, 0.04)])
    assert [c.alpha for c in comparisons] == pytest.approx([0.05 / 3, 0.05 / 2, 0.05])
    strictest = stats.with_power(comparisons[0])
    assert strictest.seeds_for_power == stats.seeds_needed(1.5, paired=True, alpha=0.05 / 3)
    assert strictest.seeds_for_power > stats.seeds_needed(1.5, paired=True)
    assert "at Holm's α=0.0167" in stats.verdict("a", "b", dataclasses.replace(strictest, p_holm=0.06))


def test_holm_runs_over_the_comparisons_the_study_names():
    accuracies = {
        "a": [85.0, 85.4, 84.8],
        "a-bn": [86.6, 86.9, 86.3],
        "b": [84.9, 85.6, 84.7],
        "b-bn": [86.0, 86.2, 85.9],
    }
    pairs = [("a-bn", "a"), ("b-bn", "b")]
    summary, compared = variant_rows.analyse(runs(accuracies), reference_name="a", pairs=pairs)
    assert list(zip(compared["variant"], compared["reference"])) == pairs
    raw = [scipy_stats.ttest_rel(np.array(accuracies[x]), np.array(accuracies[y])).pvalue for x, y in pairs]
    assert compared["p_value"].tolist() == pytest.approx(raw)
    assert compared["p_holm"].tolist() == pytest.approx(multipletests(raw, method="holm")[1])
    assert "over 2 comparisons" in compared["verdict"].iloc[0]
    assert summary.set_index("variant").loc["b", "verdict"] == ""  # b itself is compared with nothing


def test_studies_name_the_comparisons_they_are_about():
    assert studies.load("bn").pairs() == [(f"vgg-{d}-bn", f"vgg-{d}") for d in "abde"]
    assert studies.load("conv1").pairs() == [("vgg-c", "vgg-b"), ("vgg-c", "vgg-d")]
    assert studies.load("lrn").pairs() == [("vgg-a-lrn", "vgg-a")]
    assert studies.load("init-from-a").pairs() == [(f"{n}-from-a", f"{n}-random") for n in "bcde"]
    assert studies.load("depth").pairs() == [(v, "vgg-a") for v in ("vgg-b", "vgg-d", "vgg-e")]  # no table


@pytest.mark.parametrize(
    "table, complaint",
    [
        ({"pairs": [["a", "nope"]]}, "comparisons.pairs names 'nope', not one of its variants"),
        ({"pairs": [["a", "a"]]}, "compares 'a' with itself"),
        ({"pairs": [["a"]]}, "must be a list of \\[variant, against\\] pairs"),
        ({"each": [["{x}-bn", "x"]]}, "needs {x} once on each side"),
        ({"each": [["{x}-lrn", "{x}"]]}, "matches no pair of its variants"),
        ({"pairs": [["a-bn", "a"]], "each": [["{x}-bn", "{x}"]]}, "names a comparison twice"),
        ({"against": "a"}, "holds only pairs and each"),
    ],
)
def test_a_bad_comparisons_table_is_one_line(table, complaint):
    raw = {
        "variants": {"a": {"model": "vgg-a"}, "a-bn": {"model": "vgg-a", "batch_norm": True}},
        "budgets": {"cpu": {}},
        "comparisons": table,
    }
    with pytest.raises(BenchError, match=complaint) as caught:
        studies.parse(raw, Path("x.toml"))
    assert "\n" not in str(caught.value)


def test_a_net_started_from_a_counts_a_s_compute_beside_its_difference():
    table = runs({"vgg-a": [80.0, 81.0], "b-random": [82.0, 82.5], "b-from-a": [83.0, 83.2]}).assign(
        epochs=10, compute_scale=1.0
    )
    table["flops"] = table["variant"].map({"vgg-a": 2.0, "b-random": 3.0, "b-from-a": 3.0})
    variants = {
        "vgg-a": {"model": "vgg-a"},
        "b-random": {"model": "vgg-b"},
        "b-from-a": {"model": "vgg-b", "init_from_a": True},
    }
    _summary, compared = variant_rows.analyse(
        table, pairs=[("b-from-a", "b-random")], starts_from=compare.starts_from(variants)
    )
    # b-from-a: its own 3 x 3 x 10 and A's 3 x 2 x 10, against b-random's 3 x 3 x 10.
    assert compared["compute_ratio"].item() == pytest.approx((90 + 60) / 90)
    headers, rows = render.comparison_rows(compared)
    assert rows[0][headers.index("compute vs (all)")] == "1.67x"


def test_a_net_the_paper_never_had_shows_no_nan_figures():
    summary = variant_rows.summarize(runs({"vgg-a-bn": [85.0, 85.5]}).assign(batch_norm=True))
    summary["paper_config"] = np.nan  # what pandas 3 makes of the None a BN net gets
    shown = published_figures.published(summary, "fashion-mnist").astype(str).values.ravel().tolist()
    assert not any("nan" in cell for cell in shown)
    assert "none (the paper had no BatchNorm)" in shown


def test_peer_labels_describe_the_peer_net():
    (mobilenet,) = reference.peer_figures("mobilenetv2", False, "cifar10")
    assert "512->10" not in mobilenet.label and "MobileNetV2" in mobilenet.label


# --- the committed reports recompute from their CSVs -----------------------------------------------

COMMITTED = ["depth", "bn", "conv1", "lrn"]


def md_comparisons(text: str) -> list[dict]:
    start = text.index("| variant | vs | Δ test pts (95% CI) |")
    lines = text[start:].split("\n\n")[0].splitlines()
    headers = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(headers, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.mark.parametrize("study", COMMITTED)
def test_a_committed_report_recomputes_from_its_csv(study):
    folder = Path(__file__).resolve().parent.parent / "results"
    runs = pd.read_csv(folder / f"{study}-fashion-mnist-cpu.csv", comment="#")
    shown = md_comparisons((folder / f"{study}-fashion-mnist-cpu.md").read_text())
    assert shown and {"variant", "seed", "test_acc_pct", "convergence_slope"} <= set(runs)
    found = []
    for row in shown:
        sides = [
            runs[runs["variant"] == v].set_index("seed")["test_acc_pct"].sort_index()
            for v in (row["variant"], row["vs"])
        ]
        paired = list(sides[0].index) == list(sides[1].index)
        result = scipy_stats.ttest_rel(*sides) if paired else scipy_stats.ttest_ind(*sides, equal_var=False)
        interval = result.confidence_interval(0.95)
        diff = sides[0].mean() - sides[1].mean()
        assert row["test"] == ("paired" if paired else "Welch")
        assert row["Δ test pts (95% CI)"] == f"{diff:+.2f} ({interval.low:.2f} to {interval.high:.2f})"
        found.append(result.pvalue)
    for row, p, adjusted in zip(shown, found, multipletests(found, method="holm")[1]):
        assert (row["p"], row["Holm p"]) == (stats.format_p(p), stats.format_p(adjusted))


def test_the_confirmation_budget_says_whether_a_ranking_changed():
    assert (confirm.partner("cpu"), confirm.partner("cpu-2x+lr=0.1")) == ("cpu-2x", "cpu+lr=0.1")
    assert (
        studies.load("conv1").budget("cpu-2x").settings["epochs"]
        == 2 * studies.load("conv1").budget("cpu").settings["epochs"]
    )
    pairs = [("a-bn", "a"), ("b-bn", "b")]
    base = runs(
        {
            "a": [85.0, 85.4, 84.8, 85.1],
            "a-bn": [87.6, 87.9, 87.3, 87.5],
            "b": [84.9, 85.6, 84.7, 85.0],
            "b-bn": [85.0, 85.7, 84.6, 85.2],
        }
    )
    doubled = base.copy()
    doubled.loc[doubled["variant"] == "b-bn", "test_acc"] += 0.03  # b-bn now 3 points ahead of b
    lines = confirm.changes(
        variant_rows.analyse(base, pairs=pairs)[1], variant_rows.analyse(doubled, pairs=pairs)[1], "cpu", "cpu-2x"
    )
    assert lines[0] == "1 of 2 rankings changed at cpu-2x against cpu"
    assert lines[1].startswith("a-bn vs a: unchanged: cpu better")
    assert lines[2].startswith("b-bn vs b: CHANGED: cpu no significant difference") and "cpu-2x better" in lines[2]
    same = variant_rows.analyse(base, pairs=pairs)[1]
    assert confirm.changes(same, same, "cpu", "cpu-2x")[0] == "no ranking changed at cpu-2x against cpu"
