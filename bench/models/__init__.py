"""The model registry: the six VGG configurations of Table 1 and two modern baselines.

`build(name, **options)` checks every option (`check`) and raises BenchError with a one-line fix for a
bad one; `describe(model, input_shape)` counts parameters and forward FLOPs and summarises the layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..config import DROPOUT, WIDTH, Interval
from ..errors import BenchError, choices
from . import baselines
from .vgg import HEADS, HEADS_WITH_DROPOUT, INITS, build_vgg

_VGG = {"vgg-a": "A", "vgg-a-lrn": "A-LRN", "vgg-b": "B", "vgg-c": "C", "vgg-d": "D", "vgg-e": "E"}
_BASELINES = {"resnet18": baselines.resnet18, "mobilenetv2": baselines.mobilenetv2}

_COMMON = {"num_classes": 10, "in_channels": 3, "image_size": 32, "width": 1.0}
_VGG_ONLY = {"batch_norm": False, "head": "small", "init": "kaiming", "dropout": 0.5}
_MIN_IMAGE = {"vgg": 32, "baseline": 16}  # VGG: five 2x2 pools need at least 32 px


def names() -> list[str]:
    return [*_VGG, *_BASELINES]


def build(name: str, **options) -> nn.Module:
    """A freshly initialised model `name`.

    Every model: num_classes (>= 2, default 10), in_channels (1 or 3), image_size (default 32;
    >= 32 for VGG, >= 16 for the baselines, whose stems shrink at <= 64 px), width (0 < w <= 4).
    VGG only: batch_norm, head (paper/light/small/gap), init (paper/kaiming/xavier), dropout
    (paper/light heads only). The baselines accept batch_norm=True, which they always have.
    """
    opts = check(name, **options)
    if name in _VGG:
        return build_vgg(_VGG[name], **opts)
    return _BASELINES[name](**opts)


def check(name: str, **options) -> dict:
    """The options `build(name, **options)` would use, defaults filled in, or a BenchError naming
    the first one that does not fit."""
    if name in _VGG:
        opts = _checked(name, options, {**_COMMON, **_VGG_ONLY}, _MIN_IMAGE["vgg"])
        if not isinstance(opts["batch_norm"], bool):
            raise BenchError(f"batch_norm must be True or False, got {opts['batch_norm']!r}")
        if opts["head"] not in HEADS:
            choices("head", opts["head"], HEADS)
        if opts["init"] not in INITS:
            choices("init", opts["init"], INITS)
        _number("dropout", opts["dropout"], DROPOUT)
        if "dropout" in options and opts["head"] not in HEADS_WITH_DROPOUT:
            # Silently ignoring it would make a dropout ablation on these heads a no-op.
            raise BenchError(f"option dropout does not apply to head {opts['head']!r} "
                             f"(only to: {', '.join(HEADS_WITH_DROPOUT)})")
        return opts
    if name in _BASELINES:
        for key in sorted(_VGG_ONLY.keys() & options.keys()):
            # batch_norm=True is allowed so a study can pass it to every model; these always have BN.
            if not (key == "batch_norm" and options[key] is True):
                raise BenchError(f"option {key}={options[key]!r} does not apply to {name}")
        options = {k: v for k, v in options.items() if k not in _VGG_ONLY}
        return _checked(name, options, _COMMON, _MIN_IMAGE["baseline"])
    choices("model", name, names())


def _checked(name: str, options: dict, defaults: dict, min_image: int) -> dict:
    """`options` over `defaults`, with the options every model takes validated."""
    for key in sorted(options.keys() - defaults.keys()):
        choices("option", key, defaults)
    opts = {**defaults, **options}
    _integer("num_classes", opts["num_classes"], 2)
    if opts["in_channels"] not in (1, 3) or isinstance(opts["in_channels"], bool):
        raise BenchError(f"in_channels must be 1 or 3, got {opts['in_channels']!r}")
    _integer("image_size", opts["image_size"], min_image, f" for {name}")
    _number("width", opts["width"], WIDTH)
    return opts


def _integer(option: str, value, minimum: int, where: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BenchError(f"{option} must be an integer >= {minimum}{where}, got {value!r}")


def _number(option: str, value, allowed: Interval) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not allowed.holds(value):
        raise BenchError(f"{option} must be a number in {allowed}, got {value!r}")


@dataclass(frozen=True)
class LayerInfo:
    name: str                       # as in named_modules(), e.g. "features.0"
    type: str                       # class name, e.g. "Conv2d"
    output_shape: tuple[int, ...]   # without the batch dimension
    params: int


@dataclass(frozen=True)
class Description:
    params: int                     # all parameters, trainable or not
    flops: int                      # forward FLOPs for one image (a multiply-add counts 2)
    layers: list[LayerInfo]         # leaf modules in call order; one called twice appears twice


def describe(model: nn.Module, input_shape: tuple[int, int, int]) -> Description:
    """Count `model`'s parameters and its FLOPs on one (C, H, W) image, and list its leaf layers."""
    layers: list[LayerInfo] = []

    def recorder(name: str, module: nn.Module):
        params = sum(p.numel() for p in module.parameters())

        def record(_module, _inputs, output) -> None:
            shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
            layers.append(LayerInfo(name, type(module).__name__, shape, params))

        return record

    hooks = [
        module.register_forward_hook(recorder(name, module))
        for name, module in model.named_modules()
        if next(module.children(), None) is None
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return Description(
        params=sum(p.numel() for p in model.parameters()),
        flops=counter.get_total_flops(),
        layers=layers,
    )
