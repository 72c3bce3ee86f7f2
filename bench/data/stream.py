"""Image folders under the paper's scale protocol, streamed from disk or held decoded in memory.

Training view (section 3.1 of the paper): each image is rescaled isotropically so that its shorter side
is S (fixed, or drawn per image from [S_min, S_max]: scale jittering), a random `crop` x `crop` square is
taken from it and flipped horizontally at random. Evaluation views are taken from the image rescaled to
a test scale Q (see bench.data.views). Scales are given at the paper's size (crop 224) and applied in
proportion to the run's crop, so a 32 px CPU run with S = [256, 512] draws S from [37, 73].

Two holders, one pipeline. `stream`: the files are read and decoded in DataLoader worker processes
(torchvision.io); `stream-gpu`: the workers only read the file bytes and JPEGs are decoded a batch at
a time on the GPU (`decode_jpeg(..., device='cuda')`), the crops cut there. Either way host memory
holds only the file list and the batches in flight (workers x prefetch), whatever the dataset's size.
`auto` never picks `stream-gpu`: on an H200 with 16 host cores (results/data-stream-gpu.md) it gave
2,300-2,700 images/s however many workers, against 3,100 for 4 workers decoding and 11,000 for 12
(the batched decode is fed from the main process; where its time goes was not profiled). It is worth
asking for only when host cores are few. `memory`: every image is decoded once, at its own
size, and held in host memory; the workers crop from it. Both draw every random number of a pass (order,
S, crop position, flip) from the caller's generator before the first batch, in the main process, so the
same config gives the same batches on either holder, with any number of workers, and a pass resumes at
any batch (`start_batch`). `auto` holds in memory when the decoded images take less than
MEMORY_FRACTION of the machine's RAM.

A file that is not an image stops the load with one line naming it, before anything trains (every
file's header is read up front). A truncated file is found when it is decoded: at load time when held
in memory, during training when streamed; either way the run stops with one line naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from bench.data import images, tree, views
from bench.data.splits import (
    Normaliser,
    channel_histogram,
    check_batch_size,
    check_subset,
    folder_sources,
    ordered,
    share,
    split,
    split_hash,
    stats_of_histogram,
)
from bench.errors import BenchError, choices

HOLDERS = ("auto", "memory", "stream", "stream-gpu")
MEMORY_FRACTION = 0.25  # of physical RAM: the most `auto` holds decoded in memory
STATS_SAMPLE = 1000  # training images whose centre views give the normalisation mean and std
PREFETCH = 2  # batches each worker prepares ahead: bounds host memory
CPU = torch.device("cpu")


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


@dataclass
class Part:
    files: list[str]
    labels: torch.Tensor  # int64 [N], on the CPU
    held: list[torch.Tensor] | None = None  # decoded images (memory holder)


class _Views(Dataset):
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
            return _Failure(str(exc))


class _Plan:
    """A batch sampler whose batches are replaced before each pass (the workers persist, the plan does not)."""

    def __init__(self):
        self.batches: list = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class _Failure:
    message: str


def _collate(samples):
    failed = next((s for s in samples if isinstance(s, _Failure)), None)
    if failed is not None:
        return failed
    if samples[0].ndim == 1:  # file bytes stay a list
        return samples
    return default_collate(samples)  # in a worker it stacks straight into shared memory: no second copy


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
        dataset = _Views(data, self.mode, self.scales.crop, raw=False)
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
            f"{part}/{'raw' if on_device else 'views'}", _Views(data, self.mode, self.scales.crop, raw=on_device), plan
        )
        normalise = Normaliser(self.mean, self.std, self.device, channels_last)
        for batch, got in zip(plan, loader):
            if isinstance(got, _Failure):
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
                batch_sampler=_Plan(),
                num_workers=self.workers,
                collate_fn=_collate,
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
        loader = self._loader(f"{part}/whole", _Whole(data, self.mode), items)
        for (item,), got in zip(items, loader):
            if isinstance(got, _Failure):
                raise BenchError(got.message)
            yield got[0].to(self.device, non_blocking=True), int(data.labels[item[0]])


class _Whole(_Views):
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
            return _Failure(str(exc))


# --- opening a folder ---------------------------------------------------------------------------


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def open_folder(
    path: str,
    *,
    crop: int,
    scales: Scales,
    holder: str = "auto",
    workers: int = 2,
    subset: int | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    device: torch.device = CPU,
) -> StreamSplits:
    """Scan, check and split an image folder; hold it decoded in memory or stream it (see the module doc)."""
    if holder not in HOLDERS:
        choices("data holder", holder, HOLDERS)
    found = tree.scan(path)
    every = found.all_files()
    # One thread: reading a header is mostly Python (PIL's parser holds the GIL). On 20,000 cached JPEGs
    # this took 0.8 s, against 3.8 s with 4 threads, whose malloc arenas also kept 30 MB more of the
    # main process's memory, which the loader's workers then inherit.
    headers = {f: images.header(f) for f in every}
    mode = images.choose_mode(m for m, _, _ in headers.values())
    channels = 1 if mode == "L" else 3
    decoded_bytes = sum(channels * w * h for _, w, h in headers.values())
    budget = int(MEMORY_FRACTION * physical_memory())
    chosen = holder if holder != "auto" else ("memory" if decoded_bytes <= budget else "stream")

    info: dict = {
        "dataset": f"imagefolder:{path}",
        "source": str(found.root),
        "layout": found.layout,
        "holder": chosen,
        "holder_asked": holder,
        "decoded_bytes": decoded_bytes,
        "memory_budget_bytes": budget,
        "mode": mode,
        "n_files": len(every),
        "train_scale_px": list(scales.train),
        "test_scales_px": list(scales.test),
        "crop": crop,
    }
    pool_files = found.files("train")
    has_val, has_test = "val" in found.parts, "test" in found.parts
    test_fraction = folder_sources(info, has_val, has_test)
    check_subset(subset, len(pool_files), len(found.classes), info["dataset"])
    vf_used = 0.0 if has_val else val_fraction
    train_idx, val_idx, test_idx = split(len(pool_files), subset, vf_used, test_fraction, split_seed, info["dataset"])

    def part(entries) -> Part:
        return Part([str(f) for f, _ in entries], torch.tensor([k for _, k in entries], dtype=torch.int64))

    parts = {"train": part([pool_files[i] for i in train_idx.tolist()])}
    parts["val"] = part(found.files("val")) if has_val else part([pool_files[i] for i in val_idx.tolist()])
    if has_test:
        parts["test"] = part(found.files("test"))
    elif has_val:
        parts["test"] = parts["val"]
    else:
        parts["test"] = part([pool_files[i] for i in test_idx.tolist()])
    if chosen == "memory":
        _hold(parts, mode)

    splits = StreamSplits(
        parts,
        list(found.classes),
        mode,
        scales,
        (0.0,) * channels,
        (1.0,) * channels,
        info,
        device,
        workers,
        batch_decode=chosen == "stream-gpu" and device.type == "cuda",
        train_index=train_idx,
        val_index=None if has_val else val_idx,
    )
    splits.mean, splits.std = _stats(splits)
    info.update(
        {
            "split_seed": split_seed,
            "subset": subset,
            "val_fraction": None if has_val else vf_used,
            "test_fraction": test_fraction or None,
            "pool_size": len(pool_files),
            "n_train": len(parts["train"].files),
            "n_val": len(parts["val"].files),
            "n_test": len(parts["test"].files),
            "image_size": crop,
            "in_channels": channels,
            "num_classes": len(found.classes),
            "split_hash": split_hash(train_idx, val_idx, test_idx),
            "mean": [round(m, 6) for m in splits.mean],
            "std": [round(s, 6) for s in splits.std],
            "stats_sample": min(STATS_SAMPLE, len(parts["train"].files)),
        }
    )
    splits.info = ordered(info)
    return splits


def _hold(parts: dict[str, Part], mode: str) -> None:
    """Decode every image once (threads: torchvision's decoders release the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for data in {id(p): p for p in parts.values()}.values():
            data.held = list(pool.map(lambda f: images.decode_bytes(images.file_bytes(f), mode, f), data.files))


def _stats(splits: StreamSplits) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of centre views of up to STATS_SAMPLE training images (a fixed sample)."""
    train = splits.parts["train"]
    n = min(STATS_SAMPLE, len(train.files))
    pick = torch.randperm(len(train.files), generator=torch.Generator().manual_seed(0))[:n]
    sample = Part(
        [train.files[i] for i in pick.tolist()],
        train.labels[pick],
        None if train.held is None else [train.held[i] for i in pick.tolist()],
    )
    # In this process: worker processes started for one pass would outlive it, holding memory.
    probe = StreamSplits(
        {"train": sample},
        splits.classes,
        splits.mode,
        splits.scales,
        splits.mean,
        splits.std,
        {},
        torch.device("cpu"),
        workers=0,
    )
    # Counted batch by batch: holding the whole sample (1000 x 3 x 224 x 224) would make this the
    # loader's peak of host memory. Undo the identity normalisation (mean 0, std 1 means x / 255)
    # to count uint8 values exactly.
    counts = sum(
        channel_histogram((x * 255).round_().to(torch.uint8))
        for x, _ in probe.batches("train", 64, scale=splits.scales.crop)
    )
    return stats_of_histogram(counts)
