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

Here: choosing the holder and opening a folder (`open_folder`). The splits it returns are
bench.data.stream_splits; what the loader's worker processes do, bench.data.stream_workers.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from bench.data import images, tree
from bench.data.splits import (
    channel_histogram,
    check_subset,
    folder_sources,
    ordered,
    split,
    split_hash,
    stats_of_histogram,
)
from bench.data.stream_splits import Scales, StreamSplits
from bench.data.stream_workers import Part
from bench.errors import choices

HOLDERS = ("auto", "memory", "stream", "stream-gpu")
MEMORY_FRACTION = 0.25  # of physical RAM: the most `auto` holds decoded in memory
STATS_SAMPLE = 1000  # training images whose centre views give the normalisation mean and std
CPU = torch.device("cpu")


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
