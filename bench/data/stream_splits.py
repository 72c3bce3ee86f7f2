"""Train / val / test of an image folder under the paper's scale protocol, batched through worker processes
(bench.data.stream_workers): `StreamSplits`, a RunData as Splits is, and the `Scales` it crops at."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from bench.data import views
from bench.data.splits import Normaliser, check_batch_size, share
from bench.data.stream_workers import PREFETCH, Failure, Part, Plan, Views, Whole, collate
from bench.errors import BenchError, choices


@dataclass(frozen=True)
class Scales:
    """Training scale range and test scales in pixels, for one crop size."""

    crop: int
    train: tuple[int, int]  # S_min, S_max (equal: fixed S)
    test: tuple[int, ...]  # Q values

    @classmethod
    def at_crop(cls, crop: int, train: tuple[int, int], test: tuple[int, ...]) -> Scales:
        """Scales given at the paper's size (crop 224) -> pixels at `crop`."""
        px = [views.proportional(v, crop) for v in (*train, *test)]
        return cls(crop, (px[0], px[1]), tuple(px[2:]))


@dataclass(repr=False)
class StreamSplits:
    """Train / val / test of an image folder, batched through worker processes (a RunData, as Splits is)."""

    parts: dict[str, Part]
    classes: list[str]
    mode: str
    scales: Scales
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: dict
    device: torch.device
    workers: int = 2
    batch_decode: bool = False  # streamed JPEGs decoded a batch at a time on the data's device, not in the workers
    train_index: torch.Tensor | None = field(default=None)
    val_index: torch.Tensor | None = field(default=None)

    @property
    def in_channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def image_size(self) -> int:
        return self.scales.crop

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def test_scale(self) -> int:
        return self.scales.test[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        i = self.info
        return (
            f"StreamSplits({i.get('dataset')!r}, holder={i.get('holder')}, train={i.get('n_train')}, "
            f"val={i.get('n_val')}, test={i.get('n_test')}, crop={self.image_size}, device={self.device})"
        )

    def labels(self, part: str) -> torch.Tensor:
        return self._part(part).labels.to(self.device)

    def examples(self, count: int) -> torch.Tensor:
        """The centre views (uint8, CPU) of the first `count` test images, at the first test scale."""
        data = self.parts["test"]
        dataset = Views(data, self.mode, self.scales.crop, raw=False)
        return torch.stack(
            [dataset[(i, self.scales.test[0], 0.5, 0.5, False)] for i in range(min(count, len(data.files)))]
        )

    def _part(self, part: str) -> Part:
        if part not in self.parts:
            choices("split part", part, self.parts)
        return self.parts[part]

    def num_batches(self, part: str, batch_size: int, drop_last: bool = False) -> int:
        check_batch_size(batch_size)
        n = len(self._part(part).files)
        return n // batch_size if drop_last else -(-n // batch_size)

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
        scale: int | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (float32 normalised views [B, C, crop, crop], int64 labels [B]) on the data's device.

        Training views when `augment` (S from the training range, random crop and flip), else centre views
        at test scale `scale` (default: the first test scale). All random draws of the pass are made from
        `generator` before the first batch, as in Splits.batches, so `start_batch` resumes a pass exactly.
        `shard` = (rank, world): only that rank's rows of each batch are read and decoded (splits.share).
        """
        data = self._part(part)
        check_batch_size(batch_size)
        if start_batch < 0:
            raise BenchError(f"start_batch must be >= 0, got {start_batch}")
        n = len(data.files)
        gdev = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=gdev).cpu() if shuffle else torch.arange(n)
        if augment:
            lo_s, hi_s = self.scales.train
            s = torch.randint(lo_s, hi_s + 1, (n,), generator=generator, device=gdev).cpu()
            u = torch.rand((n, 2), generator=generator, device=gdev, dtype=torch.float64).cpu()
            flips = torch.randint(0, 2, (n,), generator=generator, device=gdev).cpu()
        else:
            q = scale or self.scales.test[0]
            s, u, flips = (
                torch.full((n,), q),
                torch.full((n, 2), 0.5, dtype=torch.float64),
                torch.zeros(n, dtype=torch.long),
            )
        items = [
            (int(i), int(si), float(uy), float(ux), bool(f))
            for i, si, (uy, ux), f in zip(order.tolist(), s.tolist(), u.tolist(), flips.tolist())
        ]
        stop = n - n % batch_size if drop_last else n
        plan = [
            items[slice(*share(lo, min(lo + batch_size, n), shard))]
            for lo in range(start_batch * batch_size, stop, batch_size)
        ]
        plan = [rows for rows in plan if rows]  # a last batch with fewer rows than ranks leaves some none
        if not plan:
            return
        on_device = self.batch_decode and data.held is None
        loader = self._loader(
            f"{part}/{'raw' if on_device else 'views'}", Views(data, self.mode, self.scales.crop, raw=on_device), plan
        )
        normalise = Normaliser(self.mean, self.std, self.device, channels_last)
        for batch, got in zip(plan, loader):
            if isinstance(got, Failure):
                raise BenchError(got.message)
            if on_device:
                got = self._views_on_device(got, batch, data)
            x, got = normalise(got), None  # the uint8 batch is not kept while the caller holds x
            yield x, data.labels[[b[0] for b in batch]].to(self.device, non_blocking=True)

    def _loader(self, key: str, dataset: Dataset, plan: list) -> DataLoader:
        """One DataLoader a part, its workers kept between passes (starting them costs ~1 s); each pass
        hands it that pass's plan."""
        loaders = self.__dict__.setdefault("_loaders", {})
        if key not in loaders:
            loaders[key] = DataLoader(
                dataset,
                batch_sampler=Plan(),
                num_workers=self.workers,
                collate_fn=collate,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.workers > 0,
                prefetch_factor=PREFETCH if self.workers else None,
            )
        loaders[key].batch_sampler.batches = plan
        return loaders[key]

    def _views_on_device(self, raws: list[torch.Tensor], batch, data: Part) -> torch.Tensor:
        decoded = views.decode_on(self.device, raws, [data.files[b[0]] for b in batch], self.mode)
        return torch.stack(
            [views.train_view(img, s, uy, ux, f, self.scales.crop) for img, (_, s, uy, ux, f) in zip(decoded, batch)]
        )

    def images(self, part: str, shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, int]]:
        """Each image of a part whole, decoded (uint8 [C, H, W] on the device), with its label: for dense
        and multi-crop evaluation, which need the whole rescaled image. `shard` = (rank, world): only
        that rank's contiguous share of the part (splits.share), so the ranks read every image once."""
        data = self._part(part)
        items = [[(i, 0, 0.0, 0.0, False)] for i in range(*share(0, len(data.files), shard))]
        if not items:
            return
        loader = self._loader(f"{part}/whole", Whole(data, self.mode), items)
        for (item,), got in zip(items, loader):
            if isinstance(got, Failure):
                raise BenchError(got.message)
            yield got[0].to(self.device, non_blocking=True), int(data.labels[item[0]])
