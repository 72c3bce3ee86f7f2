"""Published figures to put beside ours: the VGG paper's Tables 3-5 and peers' accuracies, as data.

Transcribed from the paper (arXiv:1409.1556) and the peers' READMEs (see the project's
reference notes). Every figure carries what it was measured on, so a report can say plainly
that it is other data or another recipe, never a like-for-like number. The paper's Table 3 is in
the reference notes; Tables 4 and 5 are not: they were transcribed from the paper itself and
checked row by row against the text of arXiv:1409.1556v6 (10 Apr 2015), Tables 4 and 5.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.models.vgg import CONFIGS


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Tables 3-5: ImageNet validation error (%) of a config trained at scale S
    and tested at scales Q in one evaluation mode. S and Q are written as RunConfig spells them
    ('256', '256,512' for the jittered [256; 512]), at the paper's 224 crop."""

    table: int
    config: str
    train_scale: str
    test_scales: str
    mode: str  # as bench.engine.evaluation names it: dense, multi-crop, dense+multi-crop
    top1: float
    top5: float


# Tables 3 and 4 are dense evaluation (section 3.2; Table 5's dense rows repeat Table 4's).
_T3 = {
    ("A", "256"): (29.6, 10.4),
    ("A-LRN", "256"): (29.7, 10.5),
    ("B", "256"): (28.7, 9.9),
    ("C", "256"): (28.1, 9.4),
    ("C", "384"): (28.1, 9.3),
    ("C", "256,512"): (27.3, 8.8),
    ("D", "256"): (27.0, 8.8),
    ("D", "384"): (26.8, 8.7),
    ("D", "256,512"): (25.6, 8.1),
    ("E", "256"): (27.3, 9.0),
    ("E", "384"): (26.9, 8.7),
    ("E", "256,512"): (25.5, 8.0),
}
_T3_Q = {"256": "256", "384": "384", "256,512": "384"}  # Q = S, or the middle of the S range
_T4 = {
    ("B", "256"): (28.2, 9.6),
    ("C", "256"): (27.7, 9.2),
    ("C", "384"): (27.8, 9.2),
    ("C", "256,512"): (26.3, 8.2),
    ("D", "256"): (26.6, 8.6),
    ("D", "384"): (26.5, 8.6),
    ("D", "256,512"): (24.8, 7.5),
    ("E", "256"): (26.9, 8.7),
    ("E", "384"): (26.7, 8.6),
    ("E", "256,512"): (24.8, 7.5),
}
# Section 4.2: Q = {S-32, S, S+32} for fixed S; {Smin, (Smin+Smax)/2, Smax} for jittered S in [Smin; Smax].
_T4_Q = {"256": "224,256,288", "384": "352,384,416", "256,512": "256,384,512"}
_T5 = {
    ("D", "multi-crop"): (24.6, 7.5),
    ("D", "dense+multi-crop"): (24.4, 7.2),
    ("E", "multi-crop"): (24.6, 7.4),
    ("E", "dense+multi-crop"): (24.4, 7.1),
}  # S = [256; 512]

PAPER_ROWS = (
    *(PaperRow(3, c, s, _T3_Q[s], "dense", *e) for (c, s), e in _T3.items()),
    *(PaperRow(4, c, s, _T4_Q[s], "dense", *e) for (c, s), e in _T4.items()),
    *(PaperRow(5, c, "256,512", _T4_Q["256,512"], mode, *e) for (c, mode), e in _T5.items()),
)

PAPER_SOURCE = "VGG paper Table 3 (S=Q=256, single scale)"
PAPER_LABEL = "ImageNet, different data"


@dataclass(frozen=True)
class PeerFigure:
    source: str
    dataset: str  # the RunConfig dataset name the figure is on
    model: str  # our model name it corresponds to
    batch_norm: bool | None  # None: not stated by the source, or the model always has BN
    test_acc_pct: float
    label: str  # how it differs from our runs


KUANGLIU = "kuangliu/pytorch-cifar"
KUANGLIU_RECIPE = "CIFAR-10, their recipe (BN, 512->10 head, 350 epochs)"
# Their CIFAR MobileNetV2 keeps stride 1 in its first conv and its second stage (about 90 M multiply-adds
# an image against our 24.5 M) and has a 1280->10 head: not the VGG/ResNet label, and not our net.
KUANGLIU_MOBILENET = (
    "CIFAR-10, their recipe and their MobileNetV2 (stride 1 where ours has 2 twice: ~90 M "
    "multiply-adds vs our 24.5 M; 1280->10 head; 350 epochs)"
)
CHENGYANGFU = "chengyangfu/pytorch-vgg-cifar10"
CHENGYANGFU_RECIPE = "CIFAR-10, their recipe (300 epochs, 512->512->10 head)"
GIUNG2 = "cs-giung/giung2-jax"
GIUNG2_RECIPE = "CIFAR-10, their recipe (200 epochs, 45k train, 512->512 head)"
FASHION_README = "Fashion-MNIST README (submitted, unverified)"

PEERS = (
    PeerFigure(KUANGLIU, "cifar10", "vgg-d", True, 92.64, KUANGLIU_RECIPE),
    PeerFigure(KUANGLIU, "cifar10", "resnet18", None, 93.02, KUANGLIU_RECIPE),
    PeerFigure(KUANGLIU, "cifar10", "mobilenetv2", None, 94.43, KUANGLIU_MOBILENET),
    *(
        PeerFigure(CHENGYANGFU, "cifar10", model, bn, acc, CHENGYANGFU_RECIPE)
        for model, no_bn, with_bn in (
            ("vgg-a", 91.10, 92.17),
            ("vgg-b", 92.79, 94.18),
            ("vgg-d", 92.63, 93.86),
            ("vgg-e", 92.27, 93.65),
        )
        for bn, acc in ((False, no_bn), (True, with_bn))
    ),
    *(
        PeerFigure(GIUNG2, "cifar10", model, bn, acc, GIUNG2_RECIPE)
        for model, no_bn, with_bn in (
            ("vgg-a", 90.71, 92.18),
            ("vgg-b", 92.32, 93.70),
            ("vgg-d", 92.23, 93.50),
            ("vgg-e", 92.65, 93.89),
        )
        for bn, acc in ((False, no_bn), (True, with_bn))
    ),
    PeerFigure(
        FASHION_README, "fashion-mnist", "vgg-d", None, 93.5, "Fashion-MNIST, their recipe (VGG16, no augmentation)"
    ),
    PeerFigure(
        FASHION_README,
        "fashion-mnist",
        "resnet18",
        None,
        94.9,
        "Fashion-MNIST, their recipe (flips, translation, rotation)",
    ),
)


def paper_config(model: str) -> str | None:
    """Table 1's letter for one of our VGG model names (vgg-a-lrn -> A-LRN); None for the rest."""
    letter = model.removeprefix("vgg-").upper()
    return letter if model.startswith("vgg-") and letter in CONFIGS else None


def paper_row(model: str, batch_norm: bool, train_scale: str, test_scales: str, mode: str = "dense") -> PaperRow | None:
    """The paper's row for this model trained at S and tested at Q (RunConfig's spelling) in `mode`;
    where the paper has no such mode there, its dense row (its default: the row says so). None where
    the paper has no row: BN nets, the baselines, scales it did not test."""
    letter = paper_config(model)
    if letter is None or batch_norm:
        return None
    rows = [r for r in PAPER_ROWS if (r.config, r.train_scale, r.test_scales) == (letter, train_scale, test_scales)]
    return next((r for r in rows if r.mode == mode), next((r for r in rows if r.mode == "dense"), None))


def paper_source(row: PaperRow) -> str:
    q = "single scale" if "," not in row.test_scales else "multi-scale"
    return (
        f"VGG paper Table {row.table} (S={row.train_scale}, Q={row.test_scales}, {q}, {row.mode}), config {row.config}"
    )


def paper_errors(model: str, batch_norm: bool) -> tuple[str, float, float] | None:
    """(config, top-1 %, top-5 %) from Table 3 at S = Q = 256, or None: the paper had no BN and no baselines."""
    row = paper_row(model, batch_norm, "256", "256")
    return None if row is None else (row.config, row.top1, row.top5)


def peer_figures(model: str, batch_norm: bool, dataset: str) -> list[PeerFigure]:
    """Peers' published accuracies for this model on this dataset, with BN matching where stated."""
    return [
        p
        for p in PEERS
        if p.model == model and p.dataset == dataset and (p.batch_norm is None or p.batch_norm == batch_norm)
    ]
