"""The optimizer of a run and its learning-rate schedule (warm-up, cosine, step, the paper's plateau rule).

The schedule is computed on the host per step; the eager step writes it into the optimizer's groups,
the graph step into device tensors that its fused optimizer reads (bench.engine.step).
"""

from __future__ import annotations

import math

import torch

from bench.config import RunConfig


def lr_at(config: RunConfig, step: int, steps_per_epoch: int, plateau_drops: int) -> float:
    """Learning rate at optimizer step `step`: warm-up times the schedule's factor."""
    total = config.total_steps(steps_per_epoch)
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        ramp = 0.1 + 0.9 * step / warmup
    else:
        ramp = 1.0
    if config.schedule == "cosine":
        progress = (step - warmup) / max(1.0, total - warmup) if step >= warmup else 0.0
        factor = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    elif config.schedule == "step":
        factor = 0.1 ** (step // (config.step_epochs * steps_per_epoch))
    elif config.schedule == "plateau":
        factor = 0.1**plateau_drops
    else:
        factor = 1.0
    return config.lr * ramp * factor


def plateau_drops(config: RunConfig, val_accs: list[float]) -> int:
    """How often the paper's rule ('divide by 10 when validation accuracy stops improving') fired."""
    drops, best, since = 0, -1.0, 0
    for acc in val_accs:
        if acc > best:
            best, since = acc, 0
        else:
            since += 1
            if since >= config.patience:
                drops, since = drops + 1, 0
    return drops


def make_optimizer(config: RunConfig, model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """`fused`: one kernel for all parameters that reads its learning rate from a tensor and keeps its
    state on the device, as a CUDA graph needs (bench.engine.step); else torch's default implementation."""
    # No weight decay on biases and norm scales: standard practice, and it matters for BN nets.
    # A fine-tuned backbone may learn slower than the new last layer (backbone_lr_scale).
    head = {id(p) for p in last_linear(model).parameters()}
    groups = []
    for is_head in (False, True):
        scale = 1.0 if is_head or config.pretrained is None else config.backbone_lr_scale
        for decays in (True, False):
            params = [
                p
                for p in model.parameters()
                if p.requires_grad and (id(p) in head) == is_head and (p.ndim > 1) == decays
            ]
            if params:
                groups.append(
                    {"params": params, "weight_decay": config.weight_decay if decays else 0.0, "lr_scale": scale}
                )
    if config.optimizer == "sgd":  # SGD has no step count: fused is all a graph needs
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            **({"fused": True} if fused else {}),
        )
    # Adam's step() refuses to be captured unless its groups say capturable, fused or not.
    implementation = {"fused": True, "capturable": True} if fused else {}
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, **implementation)
    return torch.optim.AdamW(groups, lr=config.lr, **implementation)


def last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
