"""The paper's evaluation modes: FC layers as convolutions, multi-crop grids, top-1/top-5 per mode and scale."""

from __future__ import annotations

import pytest
import torch

from bench import models
from bench.config import RunConfig
from bench.data import stream
from bench.engine import evaluation
from bench.engine.train import autocast
from bench.errors import BenchError
from bench.models.dense import to_dense


@pytest.mark.parametrize("head, crop", [("paper", 32), ("paper", 64), ("light", 64), ("small", 64), ("gap", 32)])
def test_dense_net_equals_the_net_on_an_image_of_the_crop_size(head, crop):
    torch.manual_seed(0)
    model = models.build(
        "vgg-a", num_classes=7, in_channels=3, image_size=crop, head=head, width=0.0625, batch_norm=True
    ).eval()
    for m in model.modules():  # non-trivial BN statistics, so BN is part of what is checked
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    dense = to_dense(model, crop)
    x = torch.randn(3, 3, crop, crop)
    with torch.no_grad():
        plain, scores = model(x), dense(x)
    assert scores.shape == (3, 7, 1, 1)
    torch.testing.assert_close(scores.flatten(1), plain, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # a larger image: one score per crop-sized window of the final map
        bigger = dense(torch.randn(1, 3, crop + 64, crop + 96))
    side = crop // 32
    assert bigger.shape == (1, 7, (crop + 64) // 32 - side + 1, (crop + 96) // 32 - side + 1)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_global_pooling_baselines_are_their_own_dense_form(name):
    torch.manual_seed(0)
    model = models.build(name, num_classes=7, in_channels=3, image_size=32, width=0.25).eval()
    assert to_dense(model, 32) is model
    x = torch.randn(2, 3, 48, 64)  # larger than the crop: the net's output is its score map averaged
    with torch.no_grad():
        if name == "resnet18":
            trunk = torch.nn.Sequential(*list(model.children())[:-2])
            head = model.fc
        else:
            trunk = model.features
            head = model.classifier
        positions = trunk(x).permute(0, 2, 3, 1)  # [B, h, w, C]: the linear head at every position
        score_map = head(positions.reshape(-1, positions.shape[-1])).view(*positions.shape[:3], -1)
        torch.testing.assert_close(model(x), score_map.mean(dim=(1, 2)), rtol=1e-4, atol=1e-5)
    with pytest.raises(BenchError, match="needs a VGG or a net that ends in global average pooling"):
        to_dense(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)), 32)


def test_grid_crops_cover_the_corners_and_flip():
    image = torch.arange(2 * 40 * 50).view(2, 40, 50)
    crops = evaluation.grid_crops(image, 32)
    assert crops.shape == (50, 2, 32, 32)
    assert torch.equal(crops[0], image[:, :32, :32]) and torch.equal(crops[24], image[:, 8:, 18:])
    assert torch.equal(crops[12], image[:, 4:36, 9:41])  # the centre of the grid
    assert torch.equal(crops[25:], crops[:25].flip(-1))


def held_splits(images: list[torch.Tensor], labels: list[int], crop: int) -> stream.StreamSplits:
    part = stream.Part([f"img{i}" for i in range(len(images))], torch.tensor(labels), held=images)
    return stream.StreamSplits(
        {"test": part},
        [f"c{k}" for k in range(10)],
        "RGB",
        stream.Scales(crop, (crop, crop), (crop,)),
        (0.5,) * 3,
        (0.25,) * 3,
        {},
        torch.device("cpu"),
        workers=0,
    )


def test_modes_and_scales_give_top1_top5_matching_a_direct_computation():
    torch.manual_seed(1)
    crop = 32
    model = models.build("vgg-a", num_classes=10, in_channels=3, image_size=crop, head="paper", width=0.125).eval()
    images = [(torch.rand(3, 32, 32) * 255).to(torch.uint8) for _ in range(12)]
    labels = [int(k) for k in torch.randint(0, 10, (12,))]
    splits = held_splits(images, labels, crop)
    fp32 = lambda: autocast(torch.device("cpu"), "fp32")  # noqa: E731
    got = evaluation.evaluate(model, splits, ("centre", "dense", "multi-crop", "dense+multi-crop"), (224, 256), fp32)
    with torch.no_grad():
        x = (torch.stack(images).float() / 255 - 0.5) / 0.25
        probs = torch.softmax(model(x), 1)
        both = (probs + torch.softmax(model(x.flip(-1)), 1)) / 2
    y = torch.tensor(labels)
    top1 = (probs.argmax(1) == y).float().mean().item()
    top5 = (probs.topk(5, 1).indices == y[:, None]).any(1).float().mean().item()
    # At Q = 224 (the crop itself) a square image is its own centre crop, its 25 grid crops are all the
    # image, and the dense map is a single window: centre is the plain net, the others average it with its flip.
    assert got["test_top1_centre_q224"] == pytest.approx(top1) and got["test_top5_centre_q224"] == pytest.approx(top5)
    flip_top1 = (both.argmax(1) == y).float().mean().item()
    for mode in ("dense", "multi-crop", "dense_and_multi-crop"):
        assert got[f"test_top1_{mode}_q224"] == pytest.approx(flip_top1)
    assert {k for k in got if k.startswith("test_top1_centre")} == {
        "test_top1_centre_q224",
        "test_top1_centre_q256",
        "test_top1_centre_multiscale",
    }
    assert all(0.0 <= v <= 1.0 for v in got.values()) and len(got) == 4 * 3 * 2
    assert all(got[k.replace("top1", "top5")] >= v for k, v in got.items() if "top1" in k)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_every_mode_runs_on_the_baselines(name):
    torch.manual_seed(2)
    RunConfig(dataset="synthetic-images", model=name, train_scale="256", eval_modes="dense,multi-crop,dense+multi-crop")
    model = models.build(name, num_classes=10, in_channels=3, image_size=32, width=0.25).eval()
    images = [(torch.rand(3, 32, 40) * 255).to(torch.uint8) for _ in range(4)]
    fp32 = lambda: autocast(torch.device("cpu"), "fp32")  # noqa: E731
    got = evaluation.evaluate(
        model, held_splits(images, [0, 1, 2, 3], 32), ("dense", "multi-crop", "dense+multi-crop"), (224, 320), fp32
    )
    assert len(got) == 3 * 3 * 2 and all(0.0 <= v <= 1.0 for v in got.values())
