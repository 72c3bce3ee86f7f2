"""Modern baselines to set the VGGs against: torchvision's ResNet-18 and MobileNetV2.

Both are torchvision's own modules. Only the stem changes for small images: at up to
SMALL_STEM_MAX pixels (CIFAR's 32, Tiny ImageNet's 64) the usual adaptation keeps full resolution
in the stem, since the ImageNet stem's 4x (ResNet) or 2x (MobileNetV2) downsampling would leave
too little map for the later stages.
"""

from __future__ import annotations

import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from .vgg import scaled

SMALL_STEM_MAX = 64


def resnet18(*, num_classes: int, in_channels: int, image_size: int, width: float) -> nn.Module:
    model = torchvision.models.resnet18(num_classes=num_classes)
    small = image_size <= SMALL_STEM_MAX
    stem = scaled(64, width)
    if small:
        model.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(stem)
    # torchvision hard-codes the stage widths; its own _make_layer rebuilds them at any width.
    model.inplanes = stem
    for stage, (planes, stride) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2)), start=1):
        setattr(model, f"layer{stage}", model._make_layer(BasicBlock, scaled(planes, width), 2, stride))
    model.fc = nn.Linear(model.inplanes, num_classes)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            _he_init(m)
    return model


def mobilenetv2(*, num_classes: int, in_channels: int, image_size: int, width: float) -> nn.Module:
    model = torchvision.models.mobilenet_v2(num_classes=num_classes, width_mult=width)
    first = model.features[0][0]
    stride = 1 if image_size <= SMALL_STEM_MAX else 2
    model.features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, stride=stride, padding=1, bias=False)
    _he_init(model.features[0][0])
    return model


def _he_init(conv: nn.Conv2d) -> None:
    """The He init torchvision gives both networks' convs, for the ones rebuilt here."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
