"""What the DataLoader's worker processes do for a streamed image folder (bench.data.stream): each item,
drawn in the main process as (index, S, u_y, u_x, flip), becomes one uint8 training view, a whole
image, or its file's bytes to decode on the GPU; a file that fails comes back as one line."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, default_collate

from bench.data import images, views
from bench.errors import BenchError

PREFETCH = 2  # batches each worker prepares ahead: bounds host memory


@dataclass
class Part:
    files: list[str]
    labels: torch.Tensor  # int64 [N], on the CPU
    held: list[torch.Tensor] | None = None  # decoded images (memory holder)


class Views(Dataset):
    """Items are (index, S, u_y, u_x, flip); each gives one uint8 view, or its file's bytes to decode on the GPU."""

    def __init__(self, part: Part, mode: str, crop: int, raw: bool):
        self.part, self.mode, self.crop, self.raw = part, mode, crop, raw

    def __len__(self) -> int:
        return len(self.part.files)

    def __getitem__(self, item):
        i, s, uy, ux, flip = item
        path = self.part.files[i]
        try:
            if self.raw:
                return images.file_bytes(path)
            image = (
                self.part.held[i]
                if self.part.held is not None
                else images.decode_bytes(images.file_bytes(path), self.mode, path)
            )
            return views.train_view(image, s, uy, ux, flip, self.crop)
        except BenchError as exc:  # carried to the main process as one line, not a worker traceback
            return Failure(str(exc))


class Plan:
    """A batch sampler whose batches are replaced before each pass (the workers persist, the plan does not)."""

    def __init__(self):
        self.batches: list = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class Failure:
    message: str


def collate(samples):
    failed = next((s for s in samples if isinstance(s, Failure)), None)
    if failed is not None:
        return failed
    if samples[0].ndim == 1:  # file bytes stay a list
        return samples
    return default_collate(samples)  # in a worker it stacks straight into shared memory: no second copy


class Whole(Views):
    def __init__(self, part: Part, mode: str):
        super().__init__(part, mode, 0, raw=False)

    def __getitem__(self, item):
        i = item[0]
        path = self.part.files[i]
        try:
            return (
                self.part.held[i]
                if self.part.held is not None
                else images.decode_bytes(images.file_bytes(path), self.mode, path)
            )
        except BenchError as exc:
            return Failure(str(exc))
