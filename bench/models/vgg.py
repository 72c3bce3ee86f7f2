"""The six VGG configurations of the paper's Table 1, and the one builder that makes them.

Module names follow torchvision's VGG (`features.N`, `avgpool`, `classifier.N`) so that, with the
paper head, torchvision's vgg11/13/16/19 (and their _bn twins) state dicts load unchanged into
configs A/B/D/E.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.models.options import HIDDEN_LAYERS

# Output channels of the five conv blocks; each block ends in a 2x2/2 max-pool.
BLOCK_CHANNELS = (64, 128, 256, 512, 512)


@dataclass(frozen=True)
class Config:
    letter: str  # Table 1 column: "A", "A-LRN", ..., "E"
    kernels: tuple[tuple[int, ...], ...]  # per block, the kernel size of each conv in order
    lrn: bool = False  # A-LRN: LocalResponseNorm after the first conv

    @property
    def depth(self) -> int:
        """Weight layers, as the paper counts them (convs plus the three FC layers)."""
        return sum(map(len, self.kernels)) + 3


# Table 1.
CONFIGS = {
    "A": Config("A", ((3,), (3,), (3, 3), (3, 3), (3, 3))),
    "A-LRN": Config("A-LRN", ((3,), (3,), (3, 3), (3, 3), (3, 3)), lrn=True),
    "B": Config("B", ((3, 3), (3, 3), (3, 3), (3, 3), (3, 3))),
    "C": Config("C", ((3, 3), (3, 3), (3, 3, 1), (3, 3, 1), (3, 3, 1))),
    "D": Config("D", ((3, 3), (3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))),
    "E": Config("E", ((3, 3), (3, 3), (3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3))),
}


class VGG(nn.Module):
    """features -> avgpool -> flatten -> classifier, with the Table 1 config kept on `config`."""

    def __init__(self, config: Config, features: nn.Sequential, avgpool: nn.Module, classifier: nn.Module):
        super().__init__()
        self.config = config
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def build_vgg(
    letter: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    batch_norm: bool,
    head: str,
    width: float,
    init: str,
    dropout: float,
) -> VGG:
    """Build Table 1's config `letter`; options are assumed valid (bench.models.build checks them)."""
    config = CONFIGS[letter]
    layers: list[nn.Module] = []
    channels = in_channels
    for block, kernels in zip(BLOCK_CHANNELS, config.kernels):
        out = scaled(block, width)
        for kernel in kernels:
            first = not layers
            layers.append(nn.Conv2d(channels, out, kernel, padding=kernel // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            if config.lrn and first:
                layers.append(nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))
            channels = out
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))

    avgpool, classifier = _head(head, channels, num_classes, image_size, width, dropout)
    model = VGG(config, nn.Sequential(*layers), avgpool, classifier)
    _initialise(model, init)
    return model


def _head(head: str, channels: int, num_classes: int, image_size: int, width: float, dropout: float):
    if head in HIDDEN_LAYERS:
        # Both pool to 7x7 first, as torchvision does, so any input size >= 32 fits the same head.
        sizes = (channels * 7 * 7, *(scaled(h, width) for h in HIDDEN_LAYERS[head]))
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True), nn.Dropout(p=dropout)]
        layers.append(nn.Linear(sizes[-1], num_classes))
        return nn.AdaptiveAvgPool2d((7, 7)), nn.Sequential(*layers)
    if head == "small":
        # Five floor-halving pools leave an (image_size // 32)-sided map.
        return nn.Identity(), nn.Linear(channels * (image_size // 32) ** 2, num_classes)
    return nn.AdaptiveAvgPool2d(1), nn.Linear(channels, num_classes)


def _initialise(model: nn.Module, init: str) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if init == "xavier":
                nn.init.xavier_uniform_(m.weight)
            elif init == "kaiming" and isinstance(m, nn.Conv2d):
                # torchvision's VGG recipe; its Linear layers keep the paper's N(0, 0.01).
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# Section 3.1: deeper nets started from a trained A's "first four convolutional layers and the last
# three fully-connected layers". A's first four convs are the first of blocks 1 and 2 and both of block
# 3; the deeper nets' convs at those places (block, position in block) have the same shapes.
A_CONVS = ((0, 0), (1, 0), (2, 0), (2, 1))


def conv_places(model: VGG) -> dict[tuple[int, int], list[str]]:
    """(block, position in block) -> the state-dict prefixes of that conv and of a BatchNorm right after it."""
    places: dict[tuple[int, int], list[str]] = {}
    block, position, last = 0, 0, None
    for index, layer in enumerate(model.features):
        if isinstance(layer, nn.Conv2d):
            last = (block, position)
            places[last] = [f"features.{index}"]
            position += 1
        elif isinstance(layer, nn.BatchNorm2d) and last is not None:
            places[last].append(f"features.{index}")
        elif isinstance(layer, nn.MaxPool2d):
            block, position, last = block + 1, 0, None
    return places


def init_from_a(model: VGG, a_model: VGG) -> list[str]:
    """Copy A's first four convs (and their BN) and its classifier into `model`; returns the names copied."""
    ours, theirs = conv_places(model), conv_places(a_model)
    pairs = [(mine, a) for place in A_CONVS for mine, a in zip(ours[place], theirs[place])]
    source, target = a_model.state_dict(), model.state_dict()
    copied = []
    for mine, a in [*pairs, ("classifier", "classifier")]:
        for key, value in source.items():
            if key.startswith(a + "."):
                name = mine + key[len(a) :]
                if name not in target or target[name].shape != value.shape:
                    raise ValueError(
                        f"{name}: A's {key} has shape {tuple(value.shape)}, the net "
                        f"{tuple(target[name].shape) if name in target else 'no such layer'}"
                    )
                target[name] = value.clone()
                copied.append(name)
    model.load_state_dict(target)
    return copied
