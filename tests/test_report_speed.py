"""Speed ratios that survive a noisy machine: every speed comparison (bench.benchmark --end-to-end,
the step grid's --rounds, bench.benchmark.stream, bench.benchmark.ddp, bench.post's speed-ups) as
short alternating rounds, the median of the paired ratios with an interval and the load (one
implementation: bench.speed_ratio), 'not measurable' where the interval reaches 1."""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from scipy import stats

from bench import speed_ratio
from bench.benchmark import command, ddp, stream
from bench.benchmark.end_to_end import paired_ratio
from bench.post import command as post_command
from bench.post import latency
from bench.post.compress import Variant


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


# --- the same rounds for every speed ratio: bench.speed_ratio, used by each mode ---------------


def test_rounds_alternate_and_the_verdict_carries_interval_rounds_and_load():
    assert [speed_ratio.in_turns("ABC", n) for n in (1, 2, 3)] == [list("ABC"), list("CBA"), list("ABC")]
    assert speed_ratio.median_interval([float(i) for i in range(1, 51)]) == (25.5, 18.0, 33.0)
    assert speed_ratio.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == (3.0, None, None)  # 5: no 95 % interval
    measured = speed_ratio.paired_ratio([2.0, 2.1, 1.9, 2.0, 2.2, 2.05], [1.0] * 6, [0.5, 1.25])
    assert (measured["ratio_low"], measured["ratio_high"], measured["rounds"]) == (1.9, 2.2, 6)
    assert measured["ratio_verdict"] == "median 2.02x (95 % interval 1.90–2.20, 6 rounds, load 0.5–1.2)"
    assert measured["load_average_1min"] == [0.5, 1.25]
    wide = speed_ratio.paired_ratio([0.9, 1.3, 1.2, 1.1, 1.25, 1.15], [1.0] * 6)
    assert wide["ratio_verdict"].startswith("not measurable here: interval 0.90–1.30 reaches 1x")


def test_the_step_grid_measures_its_points_in_alternating_rounds_with_paired_ratios(capsys):
    argv = ["--model", "vgg-a", "--width", "0.0625", "--device", "cpu", "--in-channels", "1", "--batch-size", "2"]
    argv += ["--channels-last", "on,off", "--steps", "1", "--warmup", "0", "--rounds", "6", "--json"]
    assert command.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["round"], r["channels_last"]) for r in out["rows"][:4]] == [(1, True), (1, False), (2, False), (2, True)]
    [ratio] = out["ratios"]
    assert (ratio["point"], ratio["against"], ratio["label"]) == (2, 1, "channels_last=False / channels_last=True")
    speeds = {(r["round"], r["point"]): r["train_images_per_s"] for r in out["rows"]}
    paired = [speeds[n, 2] / speeds[n, 1] for n in range(1, 7)]
    assert ratio["train"]["ratio"] == pytest.approx(statistics.median(paired)) and ratio["train"]["rounds"] == 6
    assert (ratio["train"]["ratio_low"], ratio["train"]["ratio_high"]) == pytest.approx((min(paired), max(paired)))
    infer = ratio["infer"]
    assert infer["ratio_low"] <= infer["ratio"] <= infer["ratio_high"] and infer["rounds"] == 6
    assert "interval" in infer["ratio_verdict"] and ", 6 rounds, load " in infer["ratio_verdict"]
    assert len(out["load_average_1min"]) == 2


def test_post_times_its_variants_in_alternating_order_and_pairs_their_rounds():
    calls = []
    forwards = [lambda x, name=name: calls.append(name) for name in "abc"]
    timings = latency.time_in_turns(forwards, torch.zeros(1, 1, 2, 2), rounds=6, warmup=0)
    assert calls == list("abccbaabccbaabccba") and all(len(t.times_ms) == 6 for t in timings)
    base = replace(timings[0], times_ms=(2.0, 2.2, 1.8, 2.0, 2.4, 2.1))
    faster = replace(timings[1], times_ms=(1.0,) * 6)
    speedup = faster.speedup(base)
    assert (speedup["ratio"], speedup["ratio_low"], speedup["ratio_high"]) == pytest.approx((2.05, 1.8, 2.4))
    variants = [
        Variant("fp32", 0.5, 100, 90, 0.0, "a", timings={1: base, 32: base}),
        Variant("onnx", 0.5, 100, 90, 0.0, "b", timings={1: faster, 32: base}),
    ]
    [_, cells] = post_command.rows(variants)
    assert "2.05 [1.80, 2.40]" in cells and "1.00 [1.00, 1.00] *" in cells  # the same speed: not measurable
    assert "- load: the 1-minute load average was 0.5 before the measurements and 1.2 after" in post_command.markdown(
        variants, [0.5, 1.25]
    )
    metrics = post_command.metrics(variants)
    assert (metrics["onnx.speedup_b1_low"], metrics["onnx.speedup_b1_high"]) == pytest.approx((1.8, 2.4))


def test_the_stream_benchmark_alternates_its_loaders_and_reports_paired_ratios(tmp_path, monkeypatch, capsys):
    (tmp_path / "train" / "c0").mkdir(parents=True)
    speed = {"tutorials": 400.0, "streamed": 700.0}
    seen = []

    def fake(kind, root, images, batch, workers, device):
        seen.append(kind)
        speed[kind] *= 1.01
        return {"kind": kind, "images_per_s": speed[kind], "workers": workers, "peak_rss": 2**30, "peak_pss": 2**29}

    monkeypatch.setattr(stream, "measure", fake)
    assert stream.main([str(tmp_path), "--images", "10", "--rounds", "6"]) == 0
    assert seen == ["tutorials", "streamed", "streamed", "tutorials"] * 3
    report = capsys.readouterr().out
    assert "| streamed | 2 | 2 |" in report and "6 rounds, the loaders in alternating order" in report
    assert re.search(
        r"streamed over the tutorials' images/s: \*\*median 1\.7\dx \(95 % interval [\d.]+–[\d.]+, 6 ", report
    )


def test_the_ddp_benchmark_alternates_its_three_ways_and_pairs_them_with_one_process():
    order = []

    def fake(processes, threads, config_json, scratch):
        order.append((processes, threads))
        return {"images_per_s": 1000.0 * (1 + 0.25 * (processes > 1) + 0.2 * (threads > 1)), "test_acc": 0.75}

    rows, summary = ddp.measure("run.json", 6, 2, run=fake)
    assert order[:6] == [(1, 1), (2, 1), (1, 2), (1, 2), (2, 1), (1, 1)] and len(rows) == 18
    two = summary["ratios"]["2 processes (DDP, gloo), 1 thread each"]
    assert (two["ratio"], two["ratio_low"], two["ratio_high"], two["rounds"]) == (1.25, 1.25, 1.25, 6)
    assert summary["ratios"]["1 process, 2 threads"]["ratio_verdict"].startswith("median 1.20x (95 % interval")
    report = ddp.report(rows, summary, ["--config-json", "run.json"], 2)
    assert "| 1 process, 1 thread | 1,000 / 1,000" in report and "median 1.25x (95 % interval 1.25–1.25" in report
    assert ddp.command(2, "run.json", Path("e.jsonl"))[1:5] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
    ]
