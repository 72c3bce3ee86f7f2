"""The engine: configs, schedules, checkpoints, resume, and learning on real data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import command_error, needs_fashion, stop_after

from bench.config import LATER_SETTINGS, RunConfig
from bench.engine import checkpoint
from bench.engine.train import fit, lr_at, plateau_drops
from bench.errors import BenchError

TINY = dict(
    model="vgg-a", batch_norm=True, width=0.0625, dataset="synthetic", subset=512, epochs=3, batch_size=64, lr=0.05
)


def test_config_hash_is_stable_and_names_the_settings():
    a = RunConfig(**TINY)
    assert a.hash == RunConfig(**TINY).hash == RunConfig.from_dict({k: str(v) for k, v in TINY.items()}).hash
    assert a.hash != a.replace(seed=1).hash
    assert a.hash != a.replace(budget="cpu").hash
    assert len(a.hash) == 12
    # Settings added later leave the hashes of runs recorded before them alone while at their defaults.
    before = {k: v for k, v in a.to_dict().items() if k not in LATER_SETTINGS}
    assert a.hash == hashlib.sha256(json.dumps(before, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert a.replace(loader_workers=0).hash != a.hash


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"model": "vgg-z"}, "unknown model 'vgg-z'"),
        ({"width": 0}, "'width' = 0.0 is out of range"),
        ({"epochs": "three"}, "'epochs' must be int"),
        ({"lr": -1}, "'lr' = -1.0 is out of range"),
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"colour": "red"}, "unknown setting 'colour'"),
        ({"batch_norm": "maybe"}, "'batch_norm' must be bool"),
    ],
)
def test_bad_settings_are_named(values, fragment):
    with pytest.raises(BenchError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        RunConfig.from_dict(values)


def test_schedules():
    config = RunConfig(lr=0.1, epochs=10, warmup_epochs=1, schedule="cosine")
    assert lr_at(config, 0, 100, 0) == pytest.approx(0.01)  # warm-up starts at lr/10
    assert lr_at(config, 100, 100, 0) == pytest.approx(0.1)  # and ends at lr
    assert lr_at(config, 999, 100, 0) < 1e-3  # cosine ends near zero
    step = RunConfig(lr=0.1, epochs=10, schedule="step", step_epochs=3)
    assert lr_at(step, 3 * 100, 100, 0) == pytest.approx(0.01)
    plateau = RunConfig(lr=0.1, epochs=10, schedule="plateau", patience=2)
    # improves, stalls twice (drop), stalls twice more (second drop)
    assert plateau_drops(plateau, [0.5, 0.6, 0.6, 0.55, 0.6, 0.58]) == 2
    assert lr_at(plateau, 0, 100, 2) == pytest.approx(0.001)


def test_fit_records_every_epoch_and_checkpoints(tmp_path):
    result = fit(RunConfig(**TINY), checkpoint_dir=tmp_path)
    assert [h.epoch for h in result.history] == [1, 2, 3]
    assert all(0 <= h.val_acc <= 1 and h.images_per_s > 0 and h.seconds > 0 for h in result.history)
    assert result.best_val_acc == max(h.val_acc for h in result.history)
    assert result.params == sum(p.numel() for p in result.model.parameters())
    assert len(result.predictions) == len(result.labels) == 500
    assert {p.name for p in tmp_path.iterdir()} == {"last.pt", "best.pt"}  # no temp files left
    saved = checkpoint.load(tmp_path / "last.pt", config_hash=result.config_hash)
    assert saved["epoch"] == 3 and len(saved["history"]) == 3


def test_resume_after_interruption_gives_the_same_numbers(tmp_path):
    config = RunConfig(**TINY)
    straight = fit(config, checkpoint_dir=tmp_path / "straight")

    with pytest.raises(KeyboardInterrupt):
        fit(config, checkpoint_dir=tmp_path / "cut", on_epoch=stop_after(2))
    seen = []
    resumed = fit(config, checkpoint_dir=tmp_path / "cut", on_epoch=lambda s: seen.append(s.epoch))
    assert seen == [3]  # only the missing epoch was trained
    assert [h.val_loss for h in resumed.history] == [h.val_loss for h in straight.history]
    assert resumed.test_acc == straight.test_acc and resumed.test_loss == straight.test_loss


def test_checkpoints_refuse_what_is_not_ours(tmp_path):
    good = tmp_path / "good.pt"
    checkpoint.save(good, {"config_hash": "abc", "model": {"w": torch.ones(2)}})
    with pytest.raises(BenchError, match="belongs to run abc"):
        checkpoint.load(good, config_hash="def")

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:100])
    with pytest.raises(BenchError, match="not a readable vgg-bench checkpoint"):
        checkpoint.load(corrupt)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, foreign)
    with pytest.raises(BenchError, match="no 'vgg-bench/1' marker"):
        checkpoint.load(foreign)

    code = tmp_path / "code.pt"
    torch.save({"format": checkpoint.FORMAT, "payload": Path("/etc/passwd")}, code)  # a pickled object
    with pytest.raises(BenchError, match="not a readable"):
        checkpoint.load(code)


def test_a_checkpoint_of_another_run_is_refused_on_resume(tmp_path):
    fit(RunConfig(**{**TINY, "epochs": 1}), checkpoint_dir=tmp_path)
    with pytest.raises(BenchError, match="belongs to run"):
        fit(RunConfig(**{**TINY, "epochs": 1, "model": "vgg-b"}), checkpoint_dir=tmp_path)


@needs_fashion
def test_learns_real_fashion_mnist():
    config = RunConfig(
        model="vgg-a",
        batch_norm=True,
        width=0.125,
        dataset="fashion-mnist",
        subset=6000,
        epochs=2,
        batch_size=128,
        lr=0.05,
    )
    result = fit(config)
    assert result.data_info["n_test"] == 10000
    assert result.test_acc > 0.6, result.test_acc  # chance is 0.1; ~0.75 is typical here


def test_cli_bad_value_is_one_line():
    assert "width" in command_error("bench.train", "--width", "9")
