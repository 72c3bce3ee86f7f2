"""Views of one decoded image (uint8 [C, H, W], on the CPU or the GPU) under the paper's scale rules.

`train_view(image, s, u_y, u_x, flip, crop)` is the image rescaled so that its shorter side is s, a
crop x crop square at relative position (u_y, u_x) in [0, 1] (0.5, 0.5: the centre), flipped if asked.
The square is cut from the source region it covers and resized once (transforms.v2's resized_crop,
antialiased bilinear), which equals rescale-then-crop up to rounding that region to whole source pixels,
and costs a crop's worth of work rather than a whole rescaled image's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from bench.data import images

PAPER_CROP = 224  # the paper's crop: scales are given relative to it
JPEG_MAGIC = b"\xff\xd8"


def proportional(paper_px: int, crop: int) -> int:
    """A scale given for the paper's 224 crop, at a crop of `crop` pixels (at least the crop itself)."""
    return max(crop, round(paper_px * crop / PAPER_CROP))


def train_view(image: torch.Tensor, s: int, uy: float, ux: float, flip: bool, crop: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    f = s / min(h, w)
    hs, ws = max(crop, round(h * f)), max(crop, round(w * f))  # the rescaled image's size
    top = min(int(uy * (hs - crop + 1)), hs - crop)
    left = min(int(ux * (ws - crop + 1)), ws - crop)
    side = max(1, round(crop / f))  # the crop's extent in source pixels
    top_src = min(max(0, round(top / f)), h - min(side, h))
    left_src = min(max(0, round(left / f)), w - min(side, w))
    out = TF.resized_crop(image, top_src, left_src, min(side, h), min(side, w), [crop, crop], antialias=True)
    return TF.horizontal_flip(out) if flip else out


def decode_on(device: torch.device, raws: list[torch.Tensor], paths: list[str], mode: str) -> list[torch.Tensor]:
    """Decode a batch of file bytes on `device` (JPEGs in one call: nvjpeg on a GPU); other formats on the CPU."""
    read_mode = ImageReadMode.GRAY if mode == "L" else ImageReadMode.RGB
    jpeg = [i for i, r in enumerate(raws) if bytes(r[:2].tolist()) == JPEG_MAGIC]
    out: list[torch.Tensor | None] = [None] * len(raws)
    if jpeg:
        try:
            decoded = decode_jpeg([raws[i] for i in jpeg], mode=read_mode, device=device)
        except RuntimeError:  # one bad file fails the batch call: find and name it on the CPU
            decoded = [images.decode_bytes(raws[i], mode, Path(paths[i])).to(device) for i in jpeg]
        for i, img in zip(jpeg, decoded):
            out[i] = img
    for i, raw in enumerate(raws):
        if out[i] is None:
            out[i] = images.decode_bytes(raw, mode, Path(paths[i])).to(device)
    return out
