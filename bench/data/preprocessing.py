"""Everything between a person's pixels and a network's input, from the training split: what the
logged MLflow model of every run (bench.engine.serving) and `bench.predict` accept, and how it is read.

- values: uint8 (or any integers) in 0..255, or floats in [0, 1] (floats above 1 and up to 255
  are read as 0..255: JSON has no uint8, so served integers may arrive as floats);
- layout: one image HxW, HxWxC or CxHxW, or a batch NxHxW, NxHxWxC or NxCxHxW (C = 1 or 3); colour
  images become greyscale for a greyscale model (PIL's weights) and greyscale becomes RGB. An array
  that fits no layout (28x28x4), or two that differ (3x28x28: one colour image or three greyscale
  ones), is refused, never guessed; so are images with a side under `Preprocessing.min_side`
  (8 px, or a quarter of the dataset's side where that is more);
- size: the dataset's native size (28x28 for Fashion-MNIST) gets the run's own treatment (the
  zero-padding 28 -> 32, or its resize); the model's own input size is taken as is; any other size
  is first brought to the native size (shorter side resized, centre cropped) as bench.data
  decodes image files; a run under the paper's scale protocol (train_scale) takes the view it was
  tested on instead: shorter side rescaled to its first test scale Q, the centre crop;
- background: the MNIST family is light objects on black. Images whose border is light are
  inverted first (`invert="auto"`, reported per image); "yes" / "no" force it either way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchvision.transforms.v2.functional as TF

from bench import data
from bench.data import views
from bench.errors import BenchError

INVERT_CHOICES = ("auto", "yes", "no")
# Training sets darker than this on average are light-on-dark (Fashion-MNIST 0.29, MNIST 0.13;
# CIFAR 0.47): only for them does a light border mean "invert me".
DARK_MEAN = 0.35
LIGHT_BORDER = 127.5
MIN_SIDE = 8  # px; see Preprocessing.min_side
CHANNELS = (1, 3)
LAYOUTS = "one image HxW, HxWxC or CxHxW (C = 1 or 3), or a batch NxHxW, NxHxWxC or NxCxHxW"


@dataclass(frozen=True)
class Preprocessing:
    """Everything between a person's pixels and the network's input, from the training split."""

    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, 0..1 scale
    std: tuple[float, ...]
    in_channels: int
    image_size: int  # what the network takes
    native_size: int  # what the dataset stores (28 for Fashion-MNIST)
    test_scale: int | None = None  # px: the shorter side before the centre crop (the scale protocol's Q)

    @classmethod
    def from_splits(cls, splits: data.RunData) -> Preprocessing:
        """The training split's own statistics (unrounded) and the dataset's sizes."""
        return cls(
            tuple(splits.classes),
            tuple(splits.mean),
            tuple(splits.std),
            splits.in_channels,
            splits.image_size,
            int(splits.info.get("native_size") or splits.image_size),
            splits.test_scale,
        )

    @property
    def num_classes(self) -> int:  # the attributes train.build_model reads from a split
        return len(self.classes)

    @property
    def dark_background(self) -> bool:
        return sum(self.mean) / len(self.mean) < DARK_MEAN

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Preprocessing:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})

    # --- pixels to network input -----------------------------------------------------------

    @property
    def min_side(self) -> int:
        """The smallest image side read as a picture: below it there is no shape to classify, and a
        wrongly read array (28x28x4 as 28 images of 28x4) is refused instead of answered."""
        return max(MIN_SIDE, self.native_size // 4)

    def to_uint8(self, values: Any) -> torch.Tensor:
        """Any accepted array as uint8 [N, C, H, W] with the model's channels (module docstring)."""
        array = read_layout(_numbers(values), self.min_side)
        images = torch.from_numpy(_as_0_255(array))
        if images.shape[1] == 3 and self.in_channels == 1:
            images = TF.rgb_to_grayscale(images)
        elif images.shape[1] == 1 and self.in_channels == 3:
            images = images.expand(-1, 3, -1, -1)
        return images.contiguous()

    def light_background(self, images: torch.Tensor) -> torch.Tensor:
        """Per image: whether its border is light, for a model trained on light-on-dark images."""
        if not self.dark_background:
            return torch.zeros(len(images), dtype=torch.bool)
        h, w = images.shape[-2:]
        k = max(1, min(h, w) // 14)  # a 2-pixel frame on 28x28
        frame = torch.cat(
            [
                images[..., :k, :].flatten(1),
                images[..., -k:, :].flatten(1),
                images[..., :, :k].flatten(1),
                images[..., :, -k:].flatten(1),
            ],
            dim=1,
        )
        return frame.float().mean(1) > LIGHT_BORDER

    def to_model_size(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] of any size -> the network's size, as the run treated its images."""
        h, w = images.shape[-2:]
        if h == w == self.image_size:
            return images
        if self.test_scale is not None:
            return torch.stack([self.test_view(image) for image in images])
        native = self.native_size
        if (h, w) != (native, native):
            # As bench.data decodes image files: shorter side to the size, centre crop.
            images = TF.center_crop(TF.resize(images, native, antialias=True), [native, native])
        return data.fit_size(images, images[:0], native, self.image_size)[0]

    def test_view(self, image: torch.Tensor) -> torch.Tensor:
        """One uint8 image [C, H, W] of any size as the run tested its images: the centre view at Q."""
        return views.train_view(image, self.test_scale, 0.5, 0.5, False, self.image_size)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> the float input the network was trained on, with Splits.batches' arithmetic to
        the last bit (x * 1/(255 s) - m/s), so that served answers equal the run's own."""
        scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], dtype=torch.float32).view(1, -1, 1, 1)
        shift = torch.tensor([m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32).view(1, -1, 1, 1)
        return images.float().mul_(scale).sub_(shift)

    def prepare(self, values: Any, invert: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images at the model's size, which were inverted) for any accepted input.

        Inverting comes before padding, so that the padded border stays black as in training.
        """
        if invert not in INVERT_CHOICES:
            raise BenchError(f"invert must be one of {', '.join(INVERT_CHOICES)}, got {invert!r}")
        images = self.to_uint8(values)
        if invert == "auto":
            flipped = self.light_background(images)
        else:
            flipped = torch.full((len(images),), invert == "yes")
        images = torch.where(flipped.view(-1, 1, 1, 1), 255 - images, images)
        return self.to_model_size(images), flipped


def readings(array: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Every layout an array's shape allows, each as an [N, C, H, W] view."""
    shape = array.shape
    if array.ndim == 2:
        return [("HxW", array[None, None])]
    if array.ndim == 3:
        found = [("NxHxW", array[:, None])]
        if shape[-1] in CHANNELS:
            found.append(("HxWxC", array.transpose(2, 0, 1)[None]))
        if shape[0] in CHANNELS:
            found.append(("CxHxW", array[None]))
        return found
    if array.ndim == 4:
        found = [("NxCxHxW", array)] if shape[1] in CHANNELS else []
        if shape[-1] in CHANNELS:
            found.append(("NxHxWxC", array.transpose(0, 3, 1, 2)))
        return found
    return []


def read_layout(array: np.ndarray, min_side: int) -> np.ndarray:
    """The one [N, C, H, W] reading of an array whose images have sides of at least `min_side`.

    None (a 28x28x4 array, 1x1 "images") or two that differ (3x28x28: one colour image, or three
    greyscale ones) is an error, never a guess. Readings of the same shape are the same pixels
    (1xHxW as one CxHxW or a batch of one HxW), so they count once. Messages give shapes, never values.
    """
    shape = "x".join(map(str, array.shape))
    if array.size == 0:
        raise BenchError(f"no images (an empty array, shape {shape or '()'}): send at least one: {LAYOUTS}")
    found: dict[tuple[int, ...], tuple[str, np.ndarray]] = {}
    for name, view in readings(array):
        if min(view.shape[-2:]) >= min_side:
            found.setdefault(view.shape, (name, view))
    if len(found) == 1:
        return next(iter(found.values()))[1]
    if not found:
        raise BenchError(
            f"cannot read an array of shape {shape} as images: send {LAYOUTS}, with sides of at least {min_side} px"
        )
    h, w = array.shape[-2:]
    raise BenchError(
        f"an array of shape {shape} is ambiguous: one colour image (CxHxW) or {array.shape[0]} "
        f"greyscale images (NxHxW); send one colour image as {h}x{w}x3, greyscale images as "
        f"{shape}x1"
    )


def _numbers(values: Any) -> np.ndarray:
    if isinstance(values, pd.DataFrame):
        values = values.to_numpy()
    array = np.asarray(values)
    if array.dtype == object:  # served JSON under an untyped signature: nested lists of numbers
        try:
            array = np.asarray(array.tolist())  # integers stay integers: 0..255, never [0, 1]
        except ValueError:
            raise BenchError(
                "images must be arrays of numbers of one size each (nested lists of "
                "pixel values); got values that are not numbers or rows of different "
                "lengths"
            ) from None
    if array.dtype.kind not in "uif":
        raise BenchError(f"images must be numbers (uint8 0..255 or floats in [0, 1]), got {array.dtype}")
    return array


def _as_0_255(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        # A read-only array (a PIL image's buffer) is copied: the tensor made from it must own writable memory.
        return np.ascontiguousarray(array) if array.flags.writeable else np.array(array, order="C")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BenchError("images contain NaN or infinity: give pixel values in 0..255 or [0, 1]")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise BenchError(f"pixel values run from {low:g} to {high:g}: give uint8 0..255 or floats in [0, 1]")
    if array.dtype.kind == "f" and high <= 1.0:
        array = array * 255.0
    return np.ascontiguousarray(np.rint(array).astype(np.uint8))
