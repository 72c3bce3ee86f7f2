"""The model registry: the six VGG configurations of Table 1 and two modern baselines.

`build(name, **options)` checks every option (`check`) and raises BenchError with a one-line fix for a
bad one; `describe(model, input_shape)` counts parameters and forward FLOPs and summarises the layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.models.options import BASELINES, VGG_COLUMNS, check, names

from . import baselines
from .vgg import build_vgg

__all__ = ["Description", "LayerInfo", "build", "check", "describe", "names"]

_BASELINES = {name: getattr(baselines, name) for name in BASELINES}  # each builder is named as its model


def build(name: str, **options) -> nn.Module:
    """A freshly initialised model `name`.

    Every model: num_classes (>= 2, default 10), in_channels (1 or 3), image_size (default 32;
    >= 32 for VGG, >= 16 for the baselines, whose stems shrink at <= 64 px), width (0 < w <= 4).
    VGG only: batch_norm, head (paper/light/small/gap), init (paper/kaiming/xavier), dropout
    (paper/light heads only). The baselines accept batch_norm=True, which they always have.
    """
    opts = check(name, **options)
    if name in VGG_COLUMNS:
        return build_vgg(VGG_COLUMNS[name], **opts)
    return _BASELINES[name](**opts)


@dataclass(frozen=True)
class LayerInfo:
    name: str  # as in named_modules(), e.g. "features.0"
    type: str  # class name, e.g. "Conv2d"
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int


@dataclass(frozen=True)
class Description:
    params: int  # all parameters, trainable or not
    flops: int  # forward FLOPs for one image (a multiply-add counts 2)
    layers: list[LayerInfo]  # leaf modules in call order; one called twice appears twice


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
