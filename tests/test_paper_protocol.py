"""Section 3.1's init from A and the paper-protocol studies (scale, multiscale, evaluation, init-from-a)."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from bench import ablation, models
from bench.config import RunConfig
from bench.errors import BenchError
from bench.run import studies


def test_init_from_a_copies_the_first_four_convs_and_the_classifier():
    torch.manual_seed(0)
    options = dict(num_classes=5, in_channels=3, image_size=32, head="paper", width=0.0625)
    a, d = models.build("vgg-a", **options), models.build("vgg-d", **options)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    copied = models.vgg.init_from_a(d, a)
    # D's conv1_1, conv2_1, conv3_1, conv3_2 (features 0, 5, 10, 12) take A's first four (0, 3, 6, 8).
    pairs = {
        "features.0": "features.0",
        "features.5": "features.3",
        "features.10": "features.6",
        "features.12": "features.8",
    }
    own, theirs = d.state_dict(), a.state_dict()
    for mine, source in pairs.items():
        for p in ("weight", "bias"):
            assert torch.equal(own[f"{mine}.{p}"], theirs[f"{source}.{p}"])
    for key in theirs:
        if key.startswith("classifier."):
            assert torch.equal(own[key], theirs[key])
    assert len(copied) == 2 * 4 + 2 * 3
    untouched = [k for k in own if k not in copied]
    assert untouched and all(torch.equal(own[k], before[k]) for k in untouched)  # the rest stays random


def test_init_from_a_settings_are_checked():
    with pytest.raises(BenchError, match="vgg-a is not one"):
        RunConfig(model="vgg-a", init_from_a=True)
    config = RunConfig(model="vgg-d", init_from_a=True, seed=3)
    assert config.a_config == RunConfig(model="vgg-a", seed=3)
    study = studies.load("init-from-a")
    with pytest.raises(BenchError, match="not in this grid: add vgg-a"):
        ablation.a_runs_first(study.grid("smoke", variants=["d-from-a"]))


def test_paper_studies_parse_and_full_budgets_need_a_folder():
    for name in ("scale", "multiscale", "evaluation", "init-from-a"):
        study = studies.load(name)
        assert set(study.budgets) == {"cpu", "smoke", "full"}
        with pytest.raises(BenchError, match="needs --dataset imagefolder:PATH"):
            study.budget("full").check_needs({})
        study.budget("full").check_needs({"dataset": "imagefolder:/data/imagenet"})
    jittered = studies.load("scale").grid("cpu", variants=["d-s256-512"])[0].config
    assert jittered.scale_range == (256, 512) and jittered.test_scale_list == (384,)  # Table 3's Q


def test_init_from_a_study_trains_a_first_then_starts_d_from_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    # d-from-a comes first in the list: the runner must still train the vgg-a run before it.
    assert (
        ablation.main(["--study", "init-from-a", "--budget", "smoke", "--variants", "d-from-a,vgg-a", "--quiet"]) == 0
    )
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("init-from-a")
    runs = client.search_runs([experiment.experiment_id], "tags.`bench.role` = 'run'")
    by_variant = {r.data.tags["bench.variant"]: r for r in runs}
    assert set(by_variant) == {"vgg-a", "d-from-a"} and all(r.info.status == "FINISHED" for r in runs)
    assert by_variant["vgg-a"].info.end_time <= by_variant["d-from-a"].info.start_time
    assert by_variant["d-from-a"].data.params["init_from_a"] == "True"
    assert "test_top1_centre_q256" in by_variant["d-from-a"].data.metrics
