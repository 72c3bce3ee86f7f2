"""Speed ratios that survive a noisy machine: bench.benchmark --end-to-end as short alternating
rounds, the median of the paired ratios with an interval and the load, 'not measurable' where the
interval reaches 1."""

from __future__ import annotations

import json
import statistics

import pytest
from scipy import stats

from bench.benchmark import command
from bench.benchmark.end_to_end import paired_ratio


def rounds(pairs: list[tuple[float, float]]) -> list[dict]:
    return [
        {"epoch": k, "loop": loop, "images_per_s": value}
        for k, pair in enumerate(pairs, 1)
        for loop, value in zip(("bench.train", "tutorial"), pair)
    ]


def test_a_steady_ratio_is_measured_and_a_swinging_one_is_not():
    steady = paired_ratio(rounds([(2.0 + 0.05 * (k % 3), 1.0) for k in range(10)]))
    assert steady["ratio_low"] > 1 and not steady["ratio_verdict"].startswith("not measurable")
    # The same command swung 0.71x to 3.23x while other work ran: its interval reaches 1.
    swinging = paired_ratio(rounds([(0.71, 1), (3.23, 1), (1.5, 1), (0.9, 1), (2.5, 1), (1.2, 1), (0.8, 1), (2.0, 1)]))
    assert swinging["ratio_low"] <= 1 <= swinging["ratio_high"]
    assert swinging["ratio_verdict"].startswith("not measurable")
    assert paired_ratio(rounds([(2.0, 1)] * 5))["ratio_low"] is None  # 5 rounds: no 95 % interval exists


def test_the_interval_covers_the_median_as_often_as_it_says():
    rng = stats.norm(0, 0.3)
    misses = 0
    for trial in range(2000):
        noise = rng.rvs(size=9, random_state=trial)
        r = paired_ratio(rounds([(2.0 * float(2**n), 1.0) for n in noise]))
        misses += not r["ratio_low"] <= 2.0 <= r["ratio_high"]
    assert misses / 2000 <= 0.05 + 0.015


def test_end_to_end_runs_alternating_rounds_and_reports_the_load(capsys):
    argv = [
        "--model",
        "vgg-a",
        "--width",
        "0.0625",
        "--device",
        "cpu",
        "--dataset",
        "synthetic",
        "--subset",
        "128",
        "--batch-size",
        "64",
        "--end-to-end",
        "--epochs",
        "6",
        "--json",
    ]
    assert command.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["loop"] for r in out["rows"][:4]] == ["bench.train", "tutorial", "tutorial", "bench.train"]
    by_round = {}
    for r in out["rows"]:
        by_round.setdefault(r["epoch"], {})[r["loop"]] = r["images_per_s"]
    ratios = [p["bench.train"] / p["tutorial"] for p in by_round.values()]
    assert out["ratio"] == pytest.approx(statistics.median(ratios)) and out["rounds"] == 6
    assert out["ratio_low"] == pytest.approx(min(ratios)) and out["ratio_high"] == pytest.approx(max(ratios))
    assert len(out["load_average_1min"]) == 2 and out["cpu_count"] >= 1
