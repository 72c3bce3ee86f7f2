"""The training step: eager, or captured as one CUDA graph (forward, backward, optimizer step).

A 32 px step of a VGG is a few hundred small kernels; launched one by one from Python the GPU
waits on the host (on an H200 end to end went at a third of the fixed-batch step's images/s).
The graph step launches them all at once with `torch.cuda.graphs` (whole-network capture). We
capture by hand rather than with torch.compile's mode="reduce-overhead": that mode graphs the
forward and backward separately and leaves the optimizer out (one more launch per parameter
tensor) unless the optimizer is compiled too, costs minutes of compilation per run, and cannot
be checked on the CPU; the hand capture is one replay a step, and everything but the capture
itself runs on a CPU.

What the graph needs, and the eager path shares: the batch copied into static buffers (the
augmentation stays outside, on the device, before the copy), the learning rate a device tensor
per parameter group that the fused optimizer reads (filled from the host schedule each step: no
sync), loss and correct predictions summed into device tensors inside the graph (read once an
epoch), and autocast without its weight cache (a cache would hold casts made at capture time).
What cannot be captured runs eagerly, and a run asked to use the graph says once why it does not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager

import torch
import torch.nn.functional as F

from bench.device import resolve_device
from bench.engine import distributed
from bench.errors import BenchError, one_line

IMPLEMENTATION = ("fused", "foreach", "capturable")  # an optimizer group's flags that choose its kernels
WARMUP_STEPS = 3  # eager steps before the capture: cuDNN picks its kernels, the optimizer makes its state
log = logging.getLogger("bench.engine.step")


def check(config) -> None:
    """A graph step asked for where there is no CUDA device: one line, before anything is recorded."""
    device = resolve_device(config.device)
    if config.step == "graph" and device.type != "cuda":
        raise BenchError(
            f"step 'graph' captures the training step as a CUDA graph, and this run's device is "
            f"{device}: use --step eager (or auto: the graph on CUDA, eager elsewhere)"
        )


def why_eager(config, device: torch.device, group: distributed.Group) -> str | None:
    """Why this run cannot use the graph step (None: it can)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, not {device}"
    if group.active:
        return "DistributedDataParallel's gradient hooks are not captured here"
    if config.precision == "fp16":
        return "fp16's GradScaler reads its overflow check on the host every step"
    if config.compile:
        return "torch.compile makes its own graphs (compile with mode reduce-overhead instead)"
    return None


def choose(config, device: torch.device, group: distributed.Group) -> str:
    """'graph' or 'eager' for the run's `step` setting; a graph asked for and not possible is said once."""
    check(config)
    if config.step == "eager":
        return "eager"
    reason = why_eager(config, device, group)
    if reason is None:
        return "graph"
    if device.type == "cuda" and group.is_main:  # on a CPU, auto means eager: nothing to say
        log.warning("training step: eager, not a CUDA graph: %s", reason)
    return "eager"


class Step:
    """One optimizer step on a batch; an epoch's loss and correct predictions summed on the device."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        autocast: Callable[[], ContextManager],
        label_smoothing: float,
        device: torch.device,
    ):
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.autocast, self.label_smoothing = autocast, label_smoothing
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        # optimizer.load_state_dict brings back the saved groups' flags: the step keeps its own
        self.flags = [{k: g[k] for k in IMPLEMENTATION if k in g} for g in optimizer.param_groups]

    def start_epoch(self) -> None:
        self.loss_sum.zero_()  # in place: a captured graph adds into these very tensors
        self.correct.zero_()

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss_sum, self.correct

    def restored(self) -> None:
        """The optimizer's state was loaded from a checkpoint: put the step's own settings back."""
        for group, flags in zip(self.optimizer.param_groups, self.flags):
            group.update(flags)

    def run(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, backward, optimizer step and the metrics: what the graph step captures."""
        with self.autocast():
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.loss_sum += loss.detach() * len(y)
        self.correct += (logits.argmax(1) == y).sum()
        return loss.detach()


class EagerStep(Step):
    """Kernels launched from Python each step; the learning rate a float in each parameter group."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        return self.run(x, y)


class GraphStep(Step):
    """The step replayed from a CUDA graph after WARMUP_STEPS eager ones, on static buffers.

    The optimizer must be fused (bench.engine.train.make_optimizer(..., fused=True)): its kernels read the
    learning rate from a device tensor and keep their step count on the device. `capture=False`
    runs the same static-buffer step without capturing it: the CPU's way to check its numbers.
    """

    def __init__(self, *args, capture: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.capture = capture
        device = self.loss_sum.device
        self.lrs = [torch.tensor(float(g["lr"]), device=device) for g in self.optimizer.param_groups]
        self.restored()
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss = torch.zeros((), device=device)

    def restored(self) -> None:
        super().restored()
        for group, lr in zip(self.optimizer.param_groups, self.lrs):
            group["lr"] = lr  # the tensor the fused kernels (and a captured graph) read
        self.graph = None  # loaded optimizer state lives in new tensors: capture again
        self.steps = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        for value, group in zip(self.lrs, self.optimizer.param_groups):
            value.fill_(lr * group["lr_scale"])  # a kernel on the device's queue, no sync
        if self.static is None:
            self.static = (torch.empty_like(x), torch.empty_like(y))  # keeps channels_last
        static_x, static_y = self.static
        if static_x.shape != x.shape:
            raise RuntimeError(
                f"graph step: batch of shape {tuple(x.shape)} after {tuple(static_x.shape)} "
                "(drop_last keeps every batch the same size)"
            )
        static_x.copy_(x)
        static_y.copy_(y)
        self.steps += 1
        if not self.capture:
            return self.run(static_x, static_y)
        if self.graph is not None:
            self.graph.replay()
            return self.loss
        if self.steps <= WARMUP_STEPS:
            return self._warm_up(static_x, static_y)
        self.loss = self._captured(static_x, static_y)
        return self.loss

    def _warm_up(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Eager steps before a capture run on a side stream (torch's whole-network capture recipe).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loss = self.run(x, y)
        torch.cuda.current_stream().wait_stream(side)
        return loss

    def _captured(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Capture this step (recorded, not run) and run it once by replaying the graph; a model that
        cannot be captured (a host sync in its forward) trains on eagerly, said once."""
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # the gradients come from the graph's own memory
        try:
            # thread_local: CUDA calls of other threads (a loader's pinning thread) may go on meanwhile
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                loss = self.run(x, y)
        except RuntimeError as exc:
            log.warning("training step: eager from now on, the CUDA graph capture failed: %s", one_line(exc))
            self.capture = False
            self.optimizer.zero_grad(set_to_none=True)
            return self.run(x, y)  # a failed capture ran nothing: this step is still to take
        self.graph = graph
        graph.replay()
        return loss


def make(kind: str, *args, **kwargs) -> Step:
    return GraphStep(*args, **kwargs) if kind == "graph" else EagerStep(*args, **kwargs)
