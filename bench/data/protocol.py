"""`RunData`: what the engine, evaluation, serving and predict read from a run's data, whichever way it
is held: `Splits` (uint8 tensors on the device) or `StreamSplits` (image files decoded by workers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch


class RunData(Protocol):
    classes: list[str]
    mean: tuple[float, ...]  # per channel, 0..1 scale, from the training split
    std: tuple[float, ...]
    info: dict  # what the data is and how it was split (recorded with the run)
    train_index: torch.Tensor | None  # positions of the train / val images in the pool they were drawn from
    val_index: torch.Tensor | None

    @property
    def device(self) -> torch.device: ...

    @property
    def in_channels(self) -> int: ...

    @property
    def image_size(self) -> int: ...  # the side of the square the network takes

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def test_scale(self) -> int | None: ...  # px of the shorter side before the centre crop (the paper's Q)

    def labels(self, part: str) -> torch.Tensor: ...

    def examples(self, count: int) -> torch.Tensor: ...  # the first test images, uint8 on the CPU

    def num_batches(self, part: str, batch_size: int, drop_last: bool = False) -> int: ...

    def batches(
        self,
        part: str,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        augment: bool = False,
        shuffle: bool = False,
        drop_last: bool = False,
        channels_last: bool = False,
        start_batch: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
