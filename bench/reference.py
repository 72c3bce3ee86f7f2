"""Published figures to put beside ours: the VGG paper's Table 3 and peers' accuracies, as data.

Transcribed from the paper (arXiv:1409.1556) and the peers' READMEs (see the project's
reference notes). Every figure carries what it was measured on, so a report can say plainly
that it is other data or another recipe, never a like-for-like number.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.models.vgg import CONFIGS

# Table 3: ImageNet validation error (%), single test scale, trained and tested at S = Q = 256.
PAPER_TABLE3 = {
    "A": (29.6, 10.4),
    "A-LRN": (29.7, 10.5),
    "B": (28.7, 9.9),
    "C": (28.1, 9.4),
    "D": (27.0, 8.8),
    "E": (27.3, 9.0),
}
PAPER_SOURCE = "VGG paper Table 3 (S=Q=256, single scale)"
PAPER_LABEL = "ImageNet, different data"


@dataclass(frozen=True)
class PeerFigure:
    source: str
    dataset: str            # the RunConfig dataset name the figure is on
    model: str              # our model name it corresponds to
    batch_norm: bool | None  # None: not stated by the source, or the model always has BN
    test_acc_pct: float
    label: str              # how it differs from our runs


KUANGLIU = "kuangliu/pytorch-cifar"
KUANGLIU_RECIPE = "CIFAR-10, their recipe (BN, 512->10 head, 350 epochs)"
CHENGYANGFU = "chengyangfu/pytorch-vgg-cifar10"
CHENGYANGFU_RECIPE = "CIFAR-10, their recipe (300 epochs, 512->512->10 head)"
GIUNG2 = "cs-giung/giung2-jax"
GIUNG2_RECIPE = "CIFAR-10, their recipe (200 epochs, 45k train, 512->512 head)"
FASHION_README = "Fashion-MNIST README (submitted, unverified)"

PEERS = (
    PeerFigure(KUANGLIU, "cifar10", "vgg-d", True, 92.64, KUANGLIU_RECIPE),
    PeerFigure(KUANGLIU, "cifar10", "resnet18", None, 93.02, KUANGLIU_RECIPE),
    PeerFigure(KUANGLIU, "cifar10", "mobilenetv2", None, 94.43, KUANGLIU_RECIPE),
    *(
        PeerFigure(CHENGYANGFU, "cifar10", model, bn, acc, CHENGYANGFU_RECIPE)
        for model, no_bn, with_bn in (
            ("vgg-a", 91.10, 92.17), ("vgg-b", 92.79, 94.18), ("vgg-d", 92.63, 93.86), ("vgg-e", 92.27, 93.65),
        )
        for bn, acc in ((False, no_bn), (True, with_bn))
    ),
    *(
        PeerFigure(GIUNG2, "cifar10", model, bn, acc, GIUNG2_RECIPE)
        for model, no_bn, with_bn in (
            ("vgg-a", 90.71, 92.18), ("vgg-b", 92.32, 93.70), ("vgg-d", 92.23, 93.50), ("vgg-e", 92.65, 93.89),
        )
        for bn, acc in ((False, no_bn), (True, with_bn))
    ),
    PeerFigure(FASHION_README, "fashion-mnist", "vgg-d", None, 93.5, "Fashion-MNIST, their recipe (VGG16, no augmentation)"),
    PeerFigure(FASHION_README, "fashion-mnist", "resnet18", None, 94.9, "Fashion-MNIST, their recipe (flips, translation, rotation)"),
)


def paper_config(model: str) -> str | None:
    """Table 1's letter for one of our VGG model names (vgg-a-lrn -> A-LRN); None for the rest."""
    letter = model.removeprefix("vgg-").upper()
    return letter if model.startswith("vgg-") and letter in CONFIGS else None


def paper_errors(model: str, batch_norm: bool) -> tuple[str, float, float] | None:
    """(config, top-1 %, top-5 %) from Table 3, or None: the paper had no BN and no baselines."""
    letter = paper_config(model)
    if letter is None or batch_norm:
        return None
    return (letter, *PAPER_TABLE3[letter])


def peer_figures(model: str, batch_norm: bool, dataset: str) -> list[PeerFigure]:
    """Peers' published accuracies for this model on this dataset, with BN matching where stated."""
    return [
        p for p in PEERS
        if p.model == model and p.dataset == dataset and (p.batch_norm is None or p.batch_norm == batch_norm)
    ]
