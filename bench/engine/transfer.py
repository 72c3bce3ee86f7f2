"""Transfer learning into a freshly built model: the paper's start from a trained VGG-A (section
3.1), a torchvision-style pretrained state_dict, and conv layers frozen (bench.train.build_model)."""

from __future__ import annotations

from pathlib import Path

import torch

from bench import models
from bench.config import RunConfig
from bench.engine import checkpoint
from bench.engine.optimization import last_linear
from bench.errors import BenchError


def start_from_a(model: torch.nn.Module, a_model: torch.nn.Module, config: RunConfig, path) -> None:
    """Section 3.1: A's first four convs and three FC layers into `model`, from A's best checkpoint."""
    a_hash = config.a_config.hash
    if path is None or not Path(path).is_file():
        raise BenchError(
            f"init_from_a needs the trained vgg-a run {a_hash} (same settings and seed) first; "
            f"its checkpoint {path or 'best.pt'} is missing: train that vgg-a run, then this one"
        )
    state = checkpoint.load(Path(path), config_hash=a_hash)
    checkpoint.load_weights(a_model, state["model"], f"vgg-a checkpoint {path}")
    models.vgg.init_from_a(model, a_model)


def load_pretrained(model: torch.nn.Module, path: str) -> None:
    """Load a torchvision-style state_dict, all but the last layer, which stays new for our classes."""
    if not Path(path).is_file():
        raise BenchError(f"pretrained file {path} does not exist: give the path of a saved state_dict")
    state = checkpoint.read(path, "pretrained state_dict")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # one of our own checkpoints
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(
            f"pretrained file {path} holds a {type(state).__name__}, not a state_dict of tensors: "
            "save it with torch.save(model.state_dict(), path)"
        )
    broken = next((k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()), None)
    if broken is not None:
        raise BenchError(
            f"pretrained file {path} holds NaN or infinite weights ({broken}): training from it "
            "gives NaN losses; give a file saved from a model that trained well"
        )
    last = {f"{name}.{p}" for name, m in model.named_modules() if m is last_linear(model) for p in ("weight", "bias")}
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if not (k in last and tuple(v.shape) != tuple(own[k].shape))}
    checkpoint.load_weights(model, {**{k: own[k] for k in last}, **kept}, f"pretrained file {path}")


def freeze_convs(model: torch.nn.Module, count: int) -> None:
    """Fix the first `count` conv layers and the BatchNorm right after each."""
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    convs = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.Conv2d)]
    if count > len(convs):
        raise BenchError(f"freeze={count} but {type(model).__name__} has only {len(convs)} conv layers")
    end = convs[count] if count < len(convs) else len(layers)
    for layer in layers[:end]:
        layer.requires_grad_(False)
