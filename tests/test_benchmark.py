"""bench.benchmark: every field on CPU, the grid, the outputs, the fair tutorial baseline, time to
accuracy, tracking overhead, and bad input."""

from __future__ import annotations

import itertools
import json
import math

import pandas as pd
import pytest
import torch
from conftest import ROOT, command_error, needs_fashion

from bench import data, provenance
from bench.benchmark import command, measure
from bench.benchmark.tutorial_loop import TutorialDataset, TutorialLoop, tutorial_transform
from bench.config import RunConfig
from bench.engine.train import Engine
from bench.errors import BenchError
from bench.models import build, describe

TINY = ["--model", "vgg-a", "--bn", "--width", "0.0625", "--device", "cpu"]
TINY_DATA = ["--dataset", "synthetic", "--subset", "256", "--batch-size", "64"]


def run_json(capsys, *argv: str, code: int = 0) -> dict:
    assert command.main([*argv, "--json"]) == code
    return json.loads(capsys.readouterr().out)


def assert_stamped(out: dict, argv: tuple[str, ...]) -> None:
    assert out["command"] == "python -m bench.benchmark " + " ".join([*argv, "--json"])
    assert out["commit"] == provenance.git_commit()
    assert out["device"].startswith("cpu") and out["host"] and out["date"]


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_step_benchmark_reports_every_field_on_cpu(capsys):
    argv = (*TINY, "--in-channels", "1", "--batch-size", "4", "--steps", "2", "--warmup", "1")
    out = run_json(capsys, *argv)
    assert_stamped(out, argv)
    [row] = out["rows"]
    expected = describe(build("vgg-a", batch_norm=True, width=0.0625, in_channels=1), (1, 32, 32))
    assert (row["flops"], row["params"]) == (expected.flops, expected.params)
    for key in (
        "train_images_per_s",
        "train_step_ms",
        "infer_images_per_s",
        "infer_step_ms",
        "warmup_s",
        "peak_memory_bytes",
        "train_flops_per_s",
    ):
        assert positive(row[key]), key
    assert row["train_images_per_s"] == pytest.approx(4 / (row["train_step_ms"] / 1e3))
    assert row["train_flops_per_s"] == pytest.approx(3 * row["flops"] * row["train_images_per_s"])
    assert row["infer_images_per_s"] > row["train_images_per_s"]  # a forward pass costs less than a step
    assert row["peak_memory_bytes"] > 100 * 2**20  # bytes, not getrusage's KiB: torch alone is more
    assert "whole process" in row["peak_memory_kind"]
    assert (row["precision"], row["channels_last"], row["compile"]) == ("fp32", True, False)
    assert row["mfu_datasheet_bf16"] is None and row["mfu_matmul"] is None and out["peaks"] == []


def test_grid_is_the_cartesian_product():
    args = command.parser().parse_args(
        [
            "--model",
            "vgg-a,resnet18",
            "--batch-size",
            "8,16",
            "--precision",
            "fp32,bf16",
            "--channels-last",
            "on,off",
            "--compile",
            "off",
            "--image-size",
            "32,64",
            "--width",
            "0.5",
        ]
    )
    configs = command.expand_grid(args)
    points = [(c.model, c.batch_size, c.precision, c.channels_last, c.image_size) for c in configs]
    assert points == list(itertools.product(["vgg-a", "resnet18"], [8, 16], ["fp32", "bf16"], [True, False], [32, 64]))
    assert all(c.width == 0.5 and not c.compile for c in configs)
    assert command.expand_grid(command.parser().parse_args([])) == [RunConfig()]
    flags = {"--no-channels-last": False, "--channels-last": True}
    for flag, expected in flags.items():
        [config] = command.expand_grid(command.parser().parse_args([flag, "--compile"]))
        assert config.channels_last is expected and config.compile is True


def test_a_grid_gives_a_row_each_and_a_stamped_csv(capsys, tmp_path):
    csv = tmp_path / "steps.csv"
    out = run_json(
        capsys,
        *TINY,
        "--batch-size",
        "2",
        "--channels-last",
        "on,off",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--csv",
        str(csv),
    )
    assert [r["channels_last"] for r in out["rows"]] == [True, False]
    assert out["rows"][0]["flops"] == out["rows"][1]["flops"]  # memory format changes speed, not work
    frame = pd.read_csv(csv)
    assert list(frame["channels_last"]) == [True, False]
    assert list(frame["train_images_per_s"]) == pytest.approx([r["train_images_per_s"] for r in out["rows"]])
    assert set(frame["commit"]) == {provenance.git_commit()} and frame["command"][0] == out["command"]


def test_peaks_and_mfu():
    rate = measure.matmul_rate(torch.device("cpu"), torch.float32, n=128, repeats=3)
    assert positive(rate) and rate > 1e7  # any CPU multiplies faster than 10 MFLOP/s
    assert measure.mfu(1_000_000_000, 100, 1.0, 3e11) == pytest.approx(1.0)
    assert measure.mfu(1_000_000_000, 100, 1.0, None) is None
    names = {
        "NVIDIA H100 80GB HBM3": 989.4,
        "NVIDIA H100 PCIe": 756.0,
        "NVIDIA H200": 989.4,
        "NVIDIA A100-SXM4-80GB": 312.0,
        "NVIDIA L40S": 362.0,
        "NVIDIA L4": 121.0,
        "NVIDIA A10": 125.0,
        "NVIDIA A10G": None,
        "Tesla T4": None,
        "Tesla V100-SXM2-16GB": None,
    }
    for name, tflops in names.items():
        assert measure.datasheet_peak(name) == (None if tflops is None else tflops * 1e12), name
    row = {"flops": 2_000_000, "batch_size": 50, "train_step_ms": 10.0}
    columns = measure.utilisation(row, {"datasheet_bf16_flops": 6e10, "matmul_flops": 3e10})
    assert columns == pytest.approx({"train_flops_per_s": 3e10, "mfu_datasheet_bf16": 0.5, "mfu_matmul": 1.0})


def test_tutorial_samples_are_bench_data_images_cropped_and_flipped():
    splits = data.load("synthetic:size=40", device="cpu")
    plain = TutorialDataset(splits.train_x, splits.train_y, tutorial_transform(splits, augment=False))
    batch_x, batch_y = next(splits.batches("train", 8))
    for i in range(8):
        image, label = plain[i]
        assert label == int(batch_y[i])
        torch.testing.assert_close(image, batch_x[i], atol=1e-5, rtol=0)  # same normalisation
    # Augmented: each sample is one of bench.data's 81 crops x 2 flips of its image.
    augmented = TutorialDataset(splits.train_x, splits.train_y, tutorial_transform(splits))
    shifts = torch.tensor(list(itertools.product(range(2 * data.CROP_PAD + 1), repeat=2)))
    for i in range(4):
        candidates = []
        for flip in (False, True):
            x = splits.train_x[i : i + 1].expand(len(shifts), -1, -1, -1)
            candidates.append(data.crop_flip(x, shifts, torch.full((len(shifts),), flip)))
        candidates = torch.cat(candidates).float()
        mean, std = splits.mean[0] * 255, splits.std[0] * 255
        sample = augmented[i][0] * std + mean
        assert (candidates - sample).abs().amax(dim=(1, 2, 3)).min() < 1e-3


@needs_fashion
def test_the_tutorial_loop_is_a_fair_baseline():
    """Same model, same start, same optimizer: it learns real Fashion-MNIST as well as bench.train."""
    config = RunConfig(model="vgg-a", batch_norm=True, width=0.125, subset=3000, epochs=2, batch_size=64, device="cpu")
    engine = Engine(config)
    tutorial = TutorialLoop(engine, workers=2)
    start = zip(engine.model.state_dict().values(), tutorial.model.state_dict().values())
    assert all(torch.equal(a, b) for a, b in start)
    assert len(tutorial.loader) == engine.splits.num_batches("train", 64, drop_last=True)
    for epoch in (1, 2):
        engine.train_epoch(epoch, [])
        tutorial.train_epoch()
    bench_acc = engine.evaluate("test")[1]
    tutorial_acc = engine.evaluate("test", tutorial.model)[1]
    assert bench_acc > 0.6 and tutorial_acc > 0.6  # chance is 0.1
    assert abs(bench_acc - tutorial_acc) < 0.06


def test_end_to_end_reports_both_loops_and_their_ratio(capsys):
    argv = (*TINY, *TINY_DATA, "--end-to-end", "--epochs", "1")
    out = run_json(capsys, *argv)
    assert_stamped(out, argv)
    assert [r["loop"] for r in out["rows"]] == ["bench.train", "tutorial"]
    assert {r["images"] for r in out["rows"]} == {out["steps_per_epoch"] * 64}  # the same work on both sides
    for key in ("bench_images_per_s", "tutorial_images_per_s", "ratio", "bench_val_acc", "tutorial_val_acc"):
        assert positive(out[key]), key
    assert out["ratio"] == pytest.approx(out["bench_images_per_s"] / out["tutorial_images_per_s"])
    assert out["config"]["epochs"] == 1 and out["loader_workers"] == 2


def test_until_stops_at_the_target_and_says_when_it_is_missed(capsys):
    recipe = (*TINY, *TINY_DATA, "--no-augment", "--optimizer", "adam", "--lr", "0.01", "--epochs", "2")
    missed = run_json(capsys, *recipe, "--until", "1.0", code=1)
    assert missed["reached"] is False and missed["epochs"] == 2 and missed["best_val_acc"] < 1.0
    first = missed["rows"][0]["val_acc"]
    assert first > 0  # it learns something in an epoch
    # Training is deterministic on the CPU: the same recipe reaches its first epoch's accuracy after one epoch.
    reached = run_json(capsys, *recipe, "--until", str(first))
    assert reached["reached"] is True and reached["epochs"] == 1 and reached["rows"][0]["val_acc"] == first
    assert reached["seconds"] > reached["train_seconds"] > 0  # the wall time includes loading and evaluation


def test_tracking_overhead_is_measured_in_a_scratch_folder(capsys, tmp_path, monkeypatch):
    study = tmp_path / "tiny.toml"
    study.write_text(
        'name = "tiny"\n[base]\nmodel = "vgg-a"\n[variants]\na = {}\nbn = { batch_norm = true }\n'
        '[budgets.smoke]\ndataset = "synthetic"\nwidth = 0.0625\nsubset = 128\nepochs = 1\nbatch_size = 32\n'
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = run_json(capsys, "--tracking-overhead", "--study", str(study), "--repeats", "1")
    [row] = out["rows"]
    assert row["runs"] == out["runs"] == 2
    assert positive(row["bare_s"]) and row["tracked_s"] > row["bare_s"]  # logging costs something
    assert out["overhead_per_run_s"] == pytest.approx((row["tracked_s"] - row["bare_s"]) / 2)
    assert list(work.iterdir()) == []  # no mlflow.db, mlruns or .bench left behind


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "vgg-z"], "unknown model 'vgg-z'"),
        (["--batch-size", "0"], "batch_size"),
        (["--precision", "fp8"], "unknown precision 'fp8'"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message):
    assert message in command_error("bench.benchmark", *argv, cwd=ROOT)


@pytest.mark.parametrize(
    "argv",
    [
        ["--steps", "0"],
        ["--until", "1.5"],
        ["--model", "vgg-a,vgg-b", "--end-to-end"],
        ["--model", "vgg-a", "--image-size", "16"],  # five pools need 32 px: caught before measuring
        ["--batch-size", "many"],
        ["--end-to-end", "--until", "0.9"],
        ["--compile", "--warmup", "0"],
    ],
)
def test_more_bad_input_is_refused_before_any_work(argv):
    with pytest.raises(BenchError) as excinfo:
        command.main(argv)
    assert "\n" not in str(excinfo.value)
