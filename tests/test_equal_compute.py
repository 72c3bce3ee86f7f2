"""Equal compute: under compute = 'flops' every variant trains the reference's training FLOPs, so
two models with a known FLOPs ratio train step counts in that ratio, each with its whole schedule."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bench import models
from bench.config import LATER_SETTINGS, RunConfig
from bench.engine.train import fit, flops_per_image
from bench.errors import BenchError
from bench.run import studies

STUDY = """
name = "flops-pair"
reference = "vgg-a"
[base]
dataset = "synthetic"
width = 0.0625
subset = 768
batch_size = 64
epochs = 3
lr = 0.02
compute = "{compute}"
[variants]
vgg-a = {{ model = "vgg-a" }}
vgg-d = {{ model = "vgg-d" }}
[budgets.smoke]
seeds = [0]
"""


def study(tmp_path: Path, compute: str) -> studies.Study:
    path = tmp_path / f"{compute}.toml"
    path.write_text(STUDY.format(compute=compute))
    return studies.load(str(path))


def test_equal_flops_runs_train_steps_in_the_ratio_of_their_flops(tmp_path):
    points = {p.variant: p.config for p in study(tmp_path, "flops").grid(flops_per_image=flops_per_image)}
    a, d = points["vgg-a"], points["vgg-d"]
    shape = (1, 32, 32)  # synthetic: one channel, 32 px
    ratio = (
        models.describe(models.build("vgg-d", in_channels=1, width=0.0625), shape).flops
        / models.describe(models.build("vgg-a", in_channels=1, width=0.0625), shape).flops
    )
    assert ratio == pytest.approx(2.0, abs=0.3)  # D costs about twice A per image
    assert a.compute_scale == 1.0 and d.compute_scale == pytest.approx(1 / ratio)

    steps, last_lr = {}, {}
    for name, config in (("vgg-a", a), ("vgg-d", d)):
        count = []
        result = fit(config, on_batch=lambda i, total, loss, count=count: count.append(i))
        steps[name], last_lr[name] = len(count), result.history[-1].lr
    # Same training FLOPs: steps x FLOPs per image agree to one step's rounding.
    assert steps["vgg-d"] == pytest.approx(steps["vgg-a"] / ratio, abs=1)
    assert steps["vgg-a"] == 3 * (691 // 64)  # vgg-a trains its 3 epochs (691 training images)
    # Each schedule is stretched to its own length: the cosine reaches its end for both.
    assert last_lr["vgg-a"] < 0.02 * 0.05 and last_lr["vgg-d"] < 0.02 * 0.05


def test_equal_flops_runs_never_share_a_config_with_equal_epoch_runs(tmp_path):
    flops = {p.variant: p.config for p in study(tmp_path, "flops").grid(flops_per_image=flops_per_image)}
    epochs = {p.variant: p.config for p in study(tmp_path, "epochs").grid()}
    assert all(flops[v].hash != epochs[v].hash for v in flops)  # the reference's too: 'compute' differs
    assert epochs["vgg-d"].compute_scale == 1.0


def test_bad_equal_compute_settings_get_one_line(tmp_path):
    with pytest.raises(BenchError, match="compute_scale.*needs compute = 'flops'"):
        RunConfig(compute_scale=0.5)
    with pytest.raises(BenchError, match="unknown compute 'seconds'|compute"):
        RunConfig(compute="seconds")
    path = tmp_path / "noref.toml"
    path.write_text(STUDY.format(compute="flops").replace('reference = "vgg-a"\n', ""))
    with pytest.raises(BenchError, match="names none: add reference"):
        studies.load(str(path)).grid(flops_per_image=flops_per_image)


def test_runs_recorded_before_equal_compute_keep_their_identity():
    """Hashes name recorded runs; at their defaults the new settings leave them as they were."""
    config = RunConfig(model="vgg-b", width=0.125, subset=30000, epochs=5)
    assert {"compute", "compute_scale"} <= LATER_SETTINGS
    before = {k: v for k, v in config.to_dict().items() if k not in LATER_SETTINGS}
    text = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert config.hash == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert config.replace(compute="flops").hash != config.hash
