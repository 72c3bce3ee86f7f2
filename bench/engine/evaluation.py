"""The paper's test-time protocol (section 3.2, Tables 4 and 5): evaluation modes over test scales Q.

For each test image and each Q (the image's shorter side rescaled to Q):
  centre            the centre crop
  multi-crop        a 5 x 5 grid of crops, each also flipped: 50 views
  dense             the whole image and its flip through the net with its FC layers as convolutions
                    (bench.models.dense); each class score map is averaged over its positions
  dense+multi-crop  the average of the two above
Each mode's class posteriors (softmax) are averaged over its views; over several Q they are averaged
again (multi-scale). Top-1 and top-5 accuracy for every mode at every Q, and over all Q, come back as
metrics named test_top1_<mode>_q<Q> and test_top1_<mode>_multiscale (Q at the paper's scale; '+' in a
mode's name is written '_and_').
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from bench.data import images, views
from bench.data.splits import Normaliser
from bench.engine.distributed import SINGLE, Group
from bench.models.dense import to_dense

GRID = 5  # crops a side in multi-crop
METRIC = re.compile(r"test_top([15])_(.+)_(q\d+|multiscale)")


def grid_crops(image: torch.Tensor, crop: int) -> torch.Tensor:
    """[GRID * GRID * 2, C, crop, crop]: a GRID x GRID grid over the image, and each crop flipped."""
    h, w = image.shape[-2:]
    tops = torch.linspace(0, h - crop, GRID).round().long().tolist()
    lefts = torch.linspace(0, w - crop, GRID).round().long().tolist()
    crops = torch.stack([image[:, t : t + crop, left : left + crop] for t in tops for left in lefts])
    return torch.cat([crops, crops.flip(-1)])


def metric_name(k: int, mode: str, q: int | None) -> str:
    """e.g. test_top1_dense_and_multi-crop_q384 (MLflow names admit no '+')."""
    return f"test_top{k}_{mode.replace('+', '_and_')}_" + ("multiscale" if q is None else f"q{q}")


def parse_metric(name: str) -> tuple[int, str, int | None] | None:
    """metric_name's inverse: (k, mode, Q or None for multiscale), or None for another metric."""
    found = METRIC.fullmatch(name)
    if found is None:
        return None
    k, mode, q = found.groups()
    return int(k), mode.replace("_and_", "+"), None if q == "multiscale" else int(q[1:])


def topk_correct(probs: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """How many rows have their label among their k most probable classes (a 0-d tensor)."""
    k = min(k, probs.shape[1])
    return (probs.topk(k, dim=1).indices == labels[:, None]).any(1).sum()


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    splits,
    modes: tuple[str, ...],
    paper_scales: tuple[int, ...],
    autocast,
    channels_last: bool = False,
    group: Group = SINGLE,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy on the test part for each mode asked, at each test scale and over all.

    In a process group of several ranks each rank decodes and scores its own share of the
    test images and the ranks add up their counts, so every rank returns the same, exact figures."""
    model.eval()
    crop = splits.image_size
    scales = [views.proportional(q, crop) for q in paper_scales]
    dense = to_dense(model, crop) if any("dense" in m for m in modes) else None
    normalise = Normaliser(splits.mean, splits.std, splits.device, channels_last)
    base = sorted({part for m in modes for part in m.split("+")})  # centre, dense, multi-crop
    probs: dict[tuple[str, int], list[torch.Tensor]] = {(m, q): [] for m in base for q in paper_scales}
    labels = []

    def posterior(net, x):
        with autocast():
            out = net(normalise(x))
        if out.ndim == 4:  # a dense score map: average over positions
            out = out.float().mean(dim=(2, 3))
        return F.softmax(out.float(), dim=1).mean(0)

    for image, label in splits.images("test", shard=group.shard):
        labels.append(label)
        for q, q_px in zip(paper_scales, scales):
            rescaled = images.shorter_side_to(image, q_px)
            if "centre" in base:
                probs["centre", q].append(posterior(model, views.train_view(image, q_px, 0.5, 0.5, False, crop)[None]))
            if "multi-crop" in base:
                probs["multi-crop", q].append(posterior(model, grid_crops(rescaled, crop)))
            if "dense" in base:
                probs["dense", q].append(posterior(dense, torch.stack([rescaled, rescaled.flip(-1)])))
    y = torch.tensor(labels, dtype=torch.long, device=splits.device)
    empty = torch.zeros(0, splits.num_classes, device=splits.device)  # a rank whose share has no image
    stacked = {key: torch.stack(v) if v else empty for key, v in probs.items()}
    correct = {}
    for mode in modes:
        parts = mode.split("+")
        per_q = {q: sum(stacked[p, q] for p in parts) / len(parts) for q in paper_scales}
        for q, p in per_q.items():
            for k in (1, 5):
                correct[metric_name(k, mode, q)] = topk_correct(p, y, k)
        if len(paper_scales) > 1:
            p = sum(per_q.values()) / len(per_q)
            for k in (1, 5):
                correct[metric_name(k, mode, None)] = topk_correct(p, y, k)
    total, *summed = group.sum(torch.tensor(len(labels), device=splits.device), *correct.values())
    return {name: int(c) / int(total) for name, c in zip(correct, summed)}
