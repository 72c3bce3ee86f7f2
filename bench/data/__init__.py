"""Datasets by name -> uint8 tensors on the training device -> augmented batches.

`load(name, ...)` returns a `Splits` (see bench.data.splits). One module per source:

fashion-mnist, mnist (bench.data.idx)
    IDX files read directly. 28 px images are zero-padded to 32 (so five 2x2 poolings fit) unless another
    `image_size` is asked for, which resizes them once at load.
cifar10, cifar100 (bench.data.cifar)
    The python batches, read with an unpickler that admits plain data only. Native 32 px.
imagefolder:PATH (bench.data.tree finds the files, bench.data.imagefolder decodes them into memory)
    Either PATH/train/<class>/* (+ PATH/val/<class>/*, + PATH/test/<class>/*) or one tree PATH/<class>/*.
    Without test/, the test set is val/ when there is one (info['test_source'] says so), else 10% of the
    images carved out by split_seed; without val/, validation is `val_fraction` of the training pool. So a
    single tree is split 80/10/10 by default. Each image's shorter side is rescaled to `image_size`
    (default 224) and the centre cropped.
synthetic[:key=value,...] (bench.data.synthetic)
    A generated, learnable task for tests.

Files are looked for and downloaded by bench.data.files: `data_dir` (else $BENCH_DATA), the system
location, the cache root ($BENCH_CACHE, default ~/.cache/vgg-bench); $BENCH_OFFLINE=1 never downloads.
"""

from bench.data.files import cache_root
from bench.data.idx import FASHION_CLASSES, IDX_FILES, MNIST_CLASSES
from bench.data.images import decode_image
from bench.data.loading import DATASETS, load, open_run
from bench.data.protocol import RunData
from bench.data.splits import CROP_PAD, PARTS, Splits, channel_stats, crop_flip, fit_size
from bench.data.stream_splits import StreamSplits
from bench.data.synthetic import make_synthetic

__all__ = [
    "CROP_PAD",
    "DATASETS",
    "FASHION_CLASSES",
    "IDX_FILES",
    "MNIST_CLASSES",
    "PARTS",
    "RunData",
    "Splits",
    "StreamSplits",
    "cache_root",
    "channel_stats",
    "crop_flip",
    "decode_image",
    "fit_size",
    "load",
    "make_synthetic",
    "open_run",
]
