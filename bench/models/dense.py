"""A VGG's classifier turned into convolutions, for the paper's dense evaluation (section 3.2).

The first FC layer becomes a conv whose kernel covers the feature map that a training crop gives
(crop // 32 on a side); any pooling between the features and the FC layer is linear and is folded into
that kernel, so on an image of exactly the crop size the dense net computes the same numbers as the
original. The later FC layers become 1x1 convs. On a larger image the net gives a map of class scores,
one per crop-sized window, which the caller averages.

The baselines (torchvision's ResNet and MobileNetV2) need no conversion: they end in global average
pooling and linear layers, so the net run on the whole image gives the average over its positions of
the class scores a 1x1 conv would map (a linear layer commutes with the average): their dense form is
the net itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import MobileNetV2, ResNet

from bench.errors import BenchError

GLOBAL_POOLING = (ResNet, MobileNetV2)  # average pooling over the whole map, then linear layers only


class DenseVGG(nn.Module):
    def __init__(self, features: nn.Module, head: nn.Sequential):
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> class score map [B, classes, h, w]."""
        return self.head(self.features(x))


def _pool_matrix(pool: nn.Module, side: int) -> torch.Tensor:
    """The pooling of a side x side map as a matrix P [out, side] per axis (it is separable and linear)."""
    if isinstance(pool, nn.Identity):
        return torch.eye(side)
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        out = pool.output_size if isinstance(pool.output_size, int) else pool.output_size[0]
        return F.adaptive_avg_pool1d(torch.eye(side)[None], out)[0].T  # [out, side]
    raise BenchError(f"cannot turn a {type(pool).__name__} before the classifier into a convolution")


def to_dense(model: nn.Module, crop: int) -> nn.Module:
    """The dense twin of a bench VGG trained on crop x crop inputs (weights shared by copy, eval use);
    a global-pooling baseline as it is."""
    from bench.models.vgg import VGG

    if isinstance(model, GLOBAL_POOLING):
        return model
    if not isinstance(model, VGG):
        raise BenchError(
            f"dense evaluation needs a VGG or a net that ends in global average pooling "
            f"({', '.join(c.__name__ for c in GLOBAL_POOLING)}); not a {type(model).__name__}"
        )
    side = crop // 32  # five 2x2 poolings
    if side < 1:
        raise BenchError(f"dense evaluation needs a crop of at least 32 px, got {crop}")
    linears = (
        [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
        if isinstance(model.classifier, nn.Sequential)
        else [model.classifier]
    )
    p = _pool_matrix(model.avgpool, side)  # [k, side]
    k = p.shape[0]
    first = linears[0]
    channels = first.in_features // (k * k)
    if channels * k * k != first.in_features:
        raise BenchError(
            f"the classifier's first layer ({first.in_features} inputs) does not match a "
            f"{channels}-channel {k}x{k} map: cannot make it dense"
        )
    w = first.weight.detach().view(first.out_features, channels, k, k)
    kernel = torch.einsum("ocij,ia,jb->ocab", w, p.to(w), p.to(w))  # fold the pooling into the kernel
    conv = nn.Conv2d(channels, first.out_features, side)
    conv.weight.data.copy_(kernel)
    conv.bias.data.copy_(first.bias.detach())
    layers: list[nn.Module] = [conv]
    rest = list(model.classifier) if isinstance(model.classifier, nn.Sequential) else []
    for m in rest[1:]:
        if isinstance(m, nn.Linear):
            one = nn.Conv2d(m.in_features, m.out_features, 1)
            one.weight.data.copy_(m.weight.detach()[:, :, None, None])
            one.bias.data.copy_(m.bias.detach())
            layers.append(one)
        else:
            layers.append(m)  # ReLU, Dropout: elementwise, the same on a map
    return DenseVGG(model.features, nn.Sequential(*layers)).to(first.weight.device).eval()
