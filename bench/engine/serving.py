"""A trained model with its preprocessing: images as a person has them in, named classes out.

The logged MLflow model of every run (bench.tracking wraps a `Servable` as a pyfunc model) and
`bench.predict` both go through this module, so a served model and the command line give the
same answer for the same pixels. What it accepts, and how it is read (values, layout, size,
background), is bench.data.preprocessing's `Preprocessing`.

Out comes, per image: the class name, its index, the confidence, whether it was inverted, and
every class's probability.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bench.config import RunConfig
from bench.data.preprocessing import LAYOUTS, Preprocessing
from bench.engine import checkpoint
from bench.engine.train import build_model

SPEC_FILE = "preprocessing.json"
WEIGHTS_FILE = "weights.pt"


class Servable:
    """A network on the CPU with its preprocessing: images in, named classes out."""

    def __init__(self, model: torch.nn.Module, preprocessing: Preprocessing, config: RunConfig | None = None):
        self.model = model.to("cpu", memory_format=torch.contiguous_format).eval()
        self.preprocessing = preprocessing
        self.config = config

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Class probabilities of uint8 images already at the model's size."""
        inputs = self.preprocessing.normalise(images)
        return torch.cat([self.model(x).float().softmax(1) for x in inputs.split(batch)])

    def predict(self, values: Any, invert: str = "auto") -> pd.DataFrame:
        images, inverted = self.preprocessing.prepare(values, invert)
        probs = self.probabilities(images)
        classes = self.preprocessing.classes
        confidence, index = probs.max(1)
        return pd.DataFrame(
            {
                "class": [classes[i] for i in index.tolist()],
                "class_index": index.numpy(),
                "confidence": confidence.numpy().astype(float),
                "inverted": inverted.numpy(),
                "probabilities": [dict(zip(classes, map(float, row))) for row in probs.tolist()],
            }
        )


# --- on disk: a folder the pyfunc model carries -------------------------------------------------


def save(folder: str | Path, model: torch.nn.Module, preprocessing: Preprocessing, config: RunConfig) -> Path:
    """The weights (a state_dict, read back with weights_only) and the settings that rebuild them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    spec = {"preprocessing": preprocessing.to_json(), "config": config.to_dict()}
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=1))
    return folder


def load(folder: str | Path) -> Servable:
    folder = Path(folder)
    spec = json.loads((folder / SPEC_FILE).read_text())
    preprocessing = Preprocessing.from_json(spec["preprocessing"])
    config = RunConfig.from_dict(spec["config"])
    model = build_model(config.replace(pretrained=None, freeze=0), preprocessing)
    state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    checkpoint.load_weights(model, state, f"weights in {folder}")
    return Servable(model, preprocessing, config)


def describe_input(preprocessing: Preprocessing) -> str:
    """What the logged model takes, in words (its signature can only say "an array")."""
    n, s = preprocessing.native_size, preprocessing.image_size
    colour = "greyscale" if preprocessing.in_channels == 1 else "RGB"
    return (
        f"{colour} images as arrays: uint8 0..255 or floats in [0, 1]; {LAYOUTS}, "
        f"sides of at least {preprocessing.min_side} px; {n}x{n} as the dataset stores them"
        + (f", {s}x{s} (the model's size)" if s != n else "")
        + " or any size (resized to it); light-background images are inverted (param invert: auto|yes|no)"
    )


def native_examples(images: torch.Tensor, preprocessing: Preprocessing) -> np.ndarray:
    """A few dataset images (uint8 at the model's size) as the dataset stores them, for an input
    example: the zero-padding undone (a resize cannot be; the model's size is accepted too)."""
    pad = (preprocessing.image_size - preprocessing.native_size) // 2
    if pad > 0:
        inner = images[..., pad:-pad, pad:-pad]
        if inner.sum() == images.sum():  # the frame is all zeros: padding, not picture
            images = inner
    array = images.cpu().numpy()
    return array[:, 0] if array.shape[1] == 1 else array.transpose(0, 2, 3, 1)
