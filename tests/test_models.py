"""Model registry: Table 1 structure, Table 2 parameter counts, torchvision compatibility, options."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
import torchvision
from conftest import ROOT, command_error
from torch import nn

from bench.errors import BenchError
from bench.models import build, describe, names

IMAGENET = dict(num_classes=1000, image_size=224, head="paper")


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_count(name: str, **options) -> int:
    # Parameter counts need no memory: build the 130M-parameter models on the meta device.
    with torch.device("meta"):
        return count(build(name, **options))


def output_shape(model: nn.Module, *input_shape: int) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(model.eval()(torch.zeros(*input_shape)).shape)


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.features if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize(
    "name, options, expected",
    [
        ("vgg-a", IMAGENET, 132_863_336),
        ("vgg-a-lrn", IMAGENET, 132_863_336),
        ("vgg-b", IMAGENET, 133_047_848),
        ("vgg-c", IMAGENET, 133_638_952),
        ("vgg-d", IMAGENET, 138_357_544),
        ("vgg-e", IMAGENET, 143_667_240),
        ("vgg-d", {**IMAGENET, "batch_norm": True}, 138_365_992),
        ("vgg-d", {**IMAGENET, "num_classes": 3}, 134_272_835),
        ("vgg-d", dict(head="small", image_size=32, num_classes=10), 14_719_818),
    ],
)
def test_parameter_counts_match_the_paper(name, options, expected):
    assert meta_count(name, **options) == expected


def test_real_build_has_the_same_count_as_meta():
    assert count(build("vgg-d")) == meta_count("vgg-d") == 14_719_818


@pytest.mark.parametrize(
    "ours, theirs",
    [("vgg-a", "vgg11"), ("vgg-b", "vgg13"), ("vgg-d", "vgg16"), ("vgg-e", "vgg19"), ("vgg-d", "vgg16_bn")],
)
def test_torchvision_weights_load_strictly_and_give_identical_outputs(ours, theirs):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, theirs)(weights=None).eval()
    # Built on the meta device to skip initialising 130M weights that the load replaces anyway;
    # loading still checks every name and shape.
    with torch.device("meta"):
        model = build(ours, batch_norm=theirs.endswith("_bn"), **IMAGENET).eval()
    model.load_state_dict(reference.state_dict(), strict=True, assign=True)
    # The adaptive 7x7 pool lets a 64 px image through the 224 px head, at a fraction of the cost.
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_c_has_1x1_convs_as_third_conv_of_blocks_3_to_5_and_d_has_3x3():
    c, d = build("vgg-c"), build("vgg-d")
    assert [m.kernel_size[0] for m in convs(c)] == [3] * 4 + [3, 3, 1] * 3
    assert all(m.padding == ((0, 0) if m.kernel_size == (1, 1) else (1, 1)) for m in convs(c))
    assert [m.kernel_size[0] for m in convs(d)] == [3] * 13
    assert [m.out_channels for m in convs(c)] == [m.out_channels for m in convs(d)]


def test_all_convs_are_stride_1_same_padding_and_five_pools():
    for name in ("vgg-a", "vgg-b", "vgg-d", "vgg-e"):
        model = build(name)
        assert all(m.kernel_size == (3, 3) and m.stride == (1, 1) and m.padding == (1, 1) for m in convs(model))
        pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
        assert len(pools) == 5 and all(p.kernel_size == 2 and p.stride == 2 for p in pools)
        assert len(convs(model)) + 3 == model.config.depth == {"vgg-a": 11, "vgg-b": 13, "vgg-d": 16, "vgg-e": 19}[name]


@pytest.mark.parametrize("batch_norm", [False, True])
def test_a_lrn_has_one_lrn_right_after_the_first_relu(batch_norm):
    features = build("vgg-a-lrn", batch_norm=batch_norm).features
    lrns = [i for i, m in enumerate(features) if isinstance(m, nn.LocalResponseNorm)]
    first_relu = next(i for i, m in enumerate(features) if isinstance(m, nn.ReLU))
    assert lrns == [first_relu + 1]
    lrn = features[lrns[0]]
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2)
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in build("vgg-a").modules())


def test_batch_norm_sits_between_every_conv_and_its_relu():
    features = list(build("vgg-e", batch_norm=True).features)
    for i, m in enumerate(features):
        if isinstance(m, nn.Conv2d):
            assert isinstance(features[i + 1], nn.BatchNorm2d) and features[i + 1].num_features == m.out_channels
            assert isinstance(features[i + 2], nn.ReLU)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in features) == 16
    assert not any(isinstance(m, nn.BatchNorm2d) for m in build("vgg-e").modules())


@pytest.mark.parametrize("name, mega_macs", [("vgg-a", 153), ("vgg-b", 228), ("vgg-d", 313), ("vgg-e", 398)])
def test_describe_flops_and_params_at_32px(name, mega_macs):
    model = build(name)
    description = describe(model, (3, 32, 32))
    assert description.flops == pytest.approx(2 * mega_macs * 1e6, rel=0.02)
    assert description.params == count(model)
    assert sum(layer.params for layer in description.layers) == count(model)
    assert model.training  # describe evaluates in eval mode, then restores the mode


def test_describe_layers_summary():
    layers = describe(build("vgg-a", batch_norm=True), (3, 32, 32)).layers
    assert (layers[0].name, layers[0].type, layers[0].output_shape, layers[0].params) == (
        "features.0",
        "Conv2d",
        (64, 32, 32),
        3 * 64 * 9 + 64,
    )
    assert layers[1].type == "BatchNorm2d"
    assert [layer.output_shape for layer in layers if layer.type == "MaxPool2d"][-1] == (512, 1, 1)
    assert (layers[-1].name, layers[-1].output_shape) == ("classifier", (10,))


@pytest.mark.parametrize(
    "head, image_size, last_in, hidden",
    [
        ("small", 64, 512 * 4, []),
        ("gap", 64, 512, []),
        ("light", 32, 256, [1024, 256]),
        ("paper", 32, 4096, [4096, 4096]),
    ],
)
def test_heads(head, image_size, last_in, hidden):
    model = build("vgg-a", head=head, image_size=image_size, num_classes=7)
    linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == hidden + [7]
    assert linears[-1].in_features == last_in
    assert output_shape(model, 2, 3, image_size, image_size) == (2, 7)


def test_width_scales_channels_and_paper_head():
    model = build("vgg-d", width=0.5, head="paper")
    assert [m.out_channels for m in convs(model)][::3] == [32, 64, 128, 256, 256]
    assert [m.out_features for m in model.classifier if isinstance(m, nn.Linear)] == [2048, 2048, 10]
    assert model.classifier[0].in_features == 256 * 7 * 7
    assert output_shape(model, 1, 3, 32, 32) == (1, 10)


def test_dropout_option_reaches_the_head():
    model = build("vgg-a", head="light", dropout=0.2)
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.2, 0.2]


def test_init_paper_kaiming_xavier():
    torch.manual_seed(0)
    paper, kaiming, xavier = (build("vgg-a", init=init, head="light") for init in ("paper", "kaiming", "xavier"))
    for model in (paper, kaiming, xavier):
        assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    for m in paper.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert m.weight.std().item() == pytest.approx(0.01, rel=0.05)
    first = (convs(paper)[0], convs(kaiming)[0], convs(xavier)[0])
    assert first[1].weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)  # fan_out, ReLU gain
    assert first[2].weight.std().item() == pytest.approx((2 / (3 * 9 + 64 * 9)) ** 0.5, rel=0.1)
    assert kaiming.classifier[0].weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_resnet18_stems():
    small, large = build("resnet18", image_size=32), build("resnet18", image_size=224, num_classes=1000)
    assert (small.conv1.kernel_size, small.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(small.maxpool, nn.Identity)
    assert (large.conv1.kernel_size, large.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(large.maxpool, nn.MaxPool2d)
    large.load_state_dict(torchvision.models.resnet18(weights=None).state_dict(), strict=True)
    assert output_shape(small, 1, 3, 32, 32) == (1, 10)


def test_mobilenetv2_stems():
    small, large = build("mobilenetv2", image_size=32), build("mobilenetv2", image_size=224, num_classes=1000)
    assert small.features[0][0].stride == (1, 1)
    assert large.features[0][0].stride == (2, 2)
    large.load_state_dict(torchvision.models.mobilenet_v2(weights=None).state_dict(), strict=True)
    assert output_shape(small, 1, 3, 32, 32) == (1, 10)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "vgg-a"])
def test_grayscale_input_and_width(name):
    model = build(name, in_channels=1)
    assert output_shape(model, 1, 1, 32, 32) == (1, 10)
    assert count(build(name, width=0.25)) < count(build(name))


def test_resnet18_width_scales_stages():
    model = build("resnet18", width=0.5)
    assert [getattr(model, f"layer{i}")[-1].conv2.out_channels for i in range(1, 5)] == [32, 64, 128, 256]
    assert model.fc.in_features == 256
    assert output_shape(model, 1, 3, 32, 32) == (1, 10)


def test_baselines_accept_batch_norm_true_only():
    assert count(build("resnet18", batch_norm=True)) == count(build("resnet18"))
    with pytest.raises(BenchError, match="batch_norm=False does not apply to resnet18"):
        build("resnet18", batch_norm=False)
    with pytest.raises(BenchError, match="option head='paper' does not apply to mobilenetv2"):
        build("mobilenetv2", head="paper")


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("vgg-z", {}, r"unknown model 'vgg-z'; choose one of: " + re.escape(", ".join(sorted(names())))),
        ("vgg-a", {"depth": 3}, r"unknown option 'depth'; choose one of: .*width"),
        ("resnet18", {"depth": 3}, r"unknown option 'depth'"),
        ("vgg-a", {"width": 0}, r"width must be a number in \(0, 4\]"),
        ("vgg-a", {"width": 4.5}, r"width must be a number in \(0, 4\]"),
        ("resnet18", {"width": 0}, r"width must be a number"),
        ("vgg-a", {"head": "nope"}, r"unknown head 'nope'; choose one of: gap, light, paper, small"),
        ("vgg-a", {"init": "he"}, r"unknown init 'he'"),
        ("vgg-a", {"in_channels": 2}, r"in_channels must be 1 or 3"),
        ("vgg-a", {"num_classes": 1}, r"num_classes must be an integer >= 2"),
        ("vgg-a", {"image_size": 16}, r"image_size must be an integer >= 32"),
        ("resnet18", {"image_size": 8}, r"image_size must be an integer >= 16"),
        ("vgg-a", {"dropout": 1.0, "head": "paper"}, r"dropout must be a number in \[0, 1\)"),
        ("vgg-a", {"dropout": 0.3}, r"option dropout does not apply to head 'small'"),
        ("vgg-a", {"batch_norm": "yes"}, r"batch_norm must be True or False"),
    ],
)
def test_bad_options_raise_one_line_bench_errors(name, options, message):
    with pytest.raises(BenchError, match=message) as error:
        build(name, **options)
    assert "\n" not in str(error.value)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.models", *args], cwd=ROOT, capture_output=True, text=True)


def test_cli_bad_value_exits_2_with_one_line():
    assert command_error("bench.models", "--width", "0", cwd=ROOT) == "error: width must be a number in (0, 4], got 0.0"


def test_cli_json_lists_every_model():
    result = run_cli("--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == names() and len(rows) == 8
    for row in rows:
        assert all(isinstance(row[key], int) and row[key] > 0 for key in ("params", "flops"))
    assert rows[names().index("vgg-d")]["params"] == 14_719_818
