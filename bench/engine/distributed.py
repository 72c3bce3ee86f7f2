"""One run over several processes: the process group that `torchrun` sets up, as the engine sees it.

`torchrun --nproc-per-node N -m bench.train ...` starts N copies of the engine. Each joins the
group here, trains on its own share of every global batch under DistributedDataParallel (which
averages the gradients, so the step equals one process's step on the whole batch), and the
ranks add up their counts exactly for every evaluation. Rank 0 alone reports and writes files.

A single process is a group of one: the engine calls the same methods, which then do nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from bench.errors import BenchError

BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0  # which of this machine's GPUs the rank drives

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self, device: torch.device) -> torch.device:
        """Each rank of a CUDA run drives its own GPU."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world): which share of each global batch this rank reads (the data's batches take it)."""
        return self.rank, self.world

    def sum(self, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Add tensors over the ranks (in place), in one collective call."""
        if not self.active:
            return values
        flat = torch.stack([v.to(torch.float64).reshape(()) for v in values])
        dist.all_reduce(flat)
        return tuple(flat[i].to(v.dtype) for i, v in enumerate(values))

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics), so all evaluate one model."""
        if self.active:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def wrap(self, model: torch.nn.Module, device: torch.device, sync_batch_norm: bool) -> torch.nn.Module:
        """The module the training step calls: DDP around `model` when there are several ranks."""
        if not self.active:
            return model
        if sync_batch_norm:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = Group()


def join(backend: str = "auto") -> Group:
    """The group torchrun started this process in (its RANK/WORLD_SIZE variables), or SINGLE."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return SINGLE
    if backend not in BACKENDS:
        raise BenchError(f"unknown distributed backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    cuda = torch.cuda.is_available()
    if backend == "nccl" and not cuda:
        raise BenchError("backend nccl needs CUDA GPUs and this machine has none: use --dist-backend gloo (or auto)")
    group = Group(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if cuda:
        torch.cuda.set_device(group.local_rank)
    dist.init_process_group("nccl" if backend == "auto" and cuda else "gloo" if backend == "auto" else backend)
    return group


def check(world_size: int, device: str, sync_batch_norm: bool, groups: int = 1) -> None:
    """What this machine must offer `groups` runs at once over `world_size` processes each (one line)."""
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda and world_size * groups > torch.cuda.device_count():
        raise BenchError(
            f"{groups} worker(s) x {world_size} processes per run need {world_size * groups} GPUs; "
            f"this machine has {torch.cuda.device_count()}: ask for fewer --gpus-per-run or --workers"
        )
    if sync_batch_norm and world_size > 1 and not wants_cuda:
        raise BenchError("sync_batch_norm works on GPUs only (PyTorch's SyncBatchNorm): drop --sync-batch-norm on CPU")
