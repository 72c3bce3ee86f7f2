"""Tests for bench.data: real Fashion-MNIST, offline errors, batching/augmentation, synthetic, imagefolder."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FASHION_DIR, command_error, needs_fashion, raw_idx

from bench import data
from bench.data import Splits, crop_flip, files, load
from bench.errors import BenchError


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No test reads or writes the user's ~/.cache or $BENCH_DATA, and downloads give up quickly."""
    monkeypatch.delenv("BENCH_DATA", raising=False)
    monkeypatch.delenv("BENCH_OFFLINE", raising=False)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "bench-cache"))
    monkeypatch.setattr(files, "DOWNLOAD_TIMEOUT_S", 3.0)


def single_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None or excinfo.value.__suppress_context__
    return msg


# --------------------------------------------------------------------------------------------------
# Real Fashion-MNIST


@pytest.fixture(scope="module")
def fashion():
    if not FASHION_DIR.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    return load("fashion-mnist", data_dir=None, split_seed=0)


@needs_fashion
def test_fashion_mnist_shapes_and_stats(fashion):
    s = fashion
    assert s.train_x.dtype == torch.uint8 and s.train_y.dtype == torch.int64
    assert s.train_x.shape[1:] == (1, 32, 32)
    assert s.val_x.shape[1:] == (1, 32, 32) and s.test_x.shape[1:] == (1, 32, 32)
    assert (s.in_channels, s.image_size, s.num_classes) == (1, 32, 10)
    assert s.classes[0] == "T-shirt/top" and s.classes[9] == "Ankle boot"
    assert len(s.test_y) == 10000 and len(s.train_y) == 54000 and len(s.val_y) == 6000
    assert sorted(s.test_y.unique().tolist()) == list(range(10))
    assert torch.bincount(s.test_y).tolist() == [1000] * 10
    # zero padding 28 -> 32: two-pixel black border everywhere
    for x in (s.train_x, s.test_x):
        assert x[:, :, :2].max() == 0 and x[:, :, -2:].max() == 0
        assert x[:, :, :, :2].max() == 0 and x[:, :, :, -2:].max() == 0
    # the well-known 0.286 mean of Fashion-MNIST, diluted by the padding to 0.286 * 784 / 1024 ~= 0.219
    assert 0.20 < s.mean[0] < 0.235
    assert 0.30 < s.std[0] < 0.36
    exact = s.train_x.double().mean().item() / 255
    assert abs(exact - s.mean[0]) < 1e-9
    info = s.info
    assert info["dataset"] == "fashion-mnist" and info["source"] == str(FASHION_DIR)
    assert (info["n_train"], info["n_val"], info["n_test"]) == (54000, 6000, 10000)
    assert info["split_seed"] == 0 and info["subset"] is None and info["val_fraction"] == 0.1
    assert info["image_size"] == 32 and "pad" in info["resize"]
    assert json.loads(json.dumps(info)) == info  # a run can log it as it is


@needs_fashion
def test_fashion_mnist_split_is_seeded_disjoint_and_matches_the_files(fashion):
    a = fashion
    train, val = set(a.train_index.tolist()), set(a.val_index.tolist())
    assert not train & val and len(train | val) == 60000
    b = load("fashion-mnist", split_seed=0)
    assert torch.equal(a.train_index, b.train_index) and torch.equal(a.val_x, b.val_x)
    assert a.info["split_hash"] == b.info["split_hash"]
    c = load("fashion-mnist", split_seed=1)
    assert not torch.equal(a.val_index, c.val_index) and a.info["split_hash"] != c.info["split_hash"]
    assert torch.equal(a.test_x, c.test_x)  # the official test set, whatever the seed
    # index bookkeeping is true to the data: rows come from the official training files
    raw_x = torch.from_numpy(raw_idx(FASHION_DIR / "train-images-idx3-ubyte.gz"))
    raw_y = torch.from_numpy(raw_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz"))
    for k in (0, 1, 4999):
        assert torch.equal(a.val_x[k, 0, 2:30, 2:30], raw_x[a.val_index[k]])
        assert a.val_y[k] == int(raw_y[a.val_index[k]])
        assert torch.equal(a.train_x[k, 0, 2:30, 2:30], raw_x[a.train_index[k]])
    # and no validation image is (byte for byte) a training image picked from the same index
    rows = {hash(r.numpy().tobytes()): i for i, r in zip(a.val_index.tolist(), a.val_x[:500])}
    for i, r in zip(a.train_index[:2000].tolist(), a.train_x[:2000]):
        j = rows.get(hash(r.numpy().tobytes()))
        assert j is None or j != i


@needs_fashion
def test_fashion_mnist_subset_and_resize():
    s = load("fashion-mnist", subset=1000, val_fraction=0.2, split_seed=3, image_size=48)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (800, 200, 10000)
    assert s.train_x.shape[1:] == (1, 48, 48) and s.test_x.shape[1:] == (1, 48, 48)
    full = load("fashion-mnist", split_seed=3, image_size=28)
    assert full.train_x.shape[1:] == (1, 28, 28) and full.info["resize"] is None
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(3))
    assert set(s.train_index.tolist()) | set(s.val_index.tolist()) == set(perm[:1000].tolist())
    assert s.info["subset"] == 1000 and s.info["val_fraction"] == 0.2 and "48" in s.info["resize"]
    with pytest.raises(BenchError, match="too small"):
        load("fashion-mnist", subset=19)
    with pytest.raises(BenchError, match="at most 60000"):
        load("fashion-mnist", subset=60001)


# --------------------------------------------------------------------------------------------------
# Missing datasets, offline; download plumbing with a stand-in for torchvision


def test_missing_mnist_offline_is_one_clear_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchError) as excinfo:
        load("MNIST", data_dir=str(empty))
    msg = single_line_error(excinfo)
    assert msg.startswith("mnist not found in ") and str(empty) in msg
    assert "download failed" in msg and "train-images-idx3-ubyte.gz" in msg and "--data-dir" in msg
    assert list(empty.iterdir()) == []  # no partial download left behind
    with pytest.raises(BenchError, match="mnist not found"):
        load("mnist", data_dir=str(tmp_path / "typo" / "dir"))
    assert not (tmp_path / "typo").exists()  # folders made for the download are removed again


def test_missing_cifar_names_the_folder_to_place(tmp_path, monkeypatch):
    with pytest.raises(BenchError) as excinfo:
        load("cifar10", data_dir=str(tmp_path))
    msg = single_line_error(excinfo)
    assert "cifar10 not found" in msg and "cifar-10-batches-py" in msg
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    with pytest.raises(BenchError, match="cifar-100-python.*BENCH_DATA|BENCH_OFFLINE"):
        load("cifar100", data_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def _idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_mnist_files(folder: Path, n_train=60, n_test=20, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        if gz:
            with gzip.open(folder / f"{stem}.gz", "wb") as fh:
                fh.write(_idx_bytes(arr))
        else:
            (folder / stem).write_bytes(_idx_bytes(arr))
    return arrays


def test_download_path_moves_files_into_place(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    class FakeMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append(root)
            print("Downloading lots of noise")  # must not reach the user
            _write_mnist_files(Path(root) / "MNIST" / "raw")

    monkeypatch.setattr(tvd, "MNIST", FakeMNIST)
    s = load("mnist", data_dir=str(tmp_path / "d"))
    assert len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "d" / "mnist").iterdir()) == sorted(
        f"{stem}.gz" for stem in data.IDX_FILES.values()
    )
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["mnist"]  # the temporary folder is gone
    assert (len(s.train_y) + len(s.val_y), len(s.test_y)) == (60, 20) and s.classes == data.MNIST_CLASSES
    load("mnist", data_dir=str(tmp_path / "d"))  # found now: no second download
    assert len(calls) == 1

    class BrokenMNIST:
        def __init__(self, root, train=True, download=False):
            (Path(root) / "MNIST" / "raw").mkdir(parents=True)
            (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"half a fi")
            raise RuntimeError("Error downloading train-labels-idx1-ubyte.gz:\nTried x, got:\nboom\n")

    monkeypatch.setattr(tvd, "MNIST", BrokenMNIST)
    with pytest.raises(BenchError) as excinfo:
        load("mnist", data_dir=str(tmp_path / "e"))
    assert "boom" in single_line_error(excinfo)
    assert not (tmp_path / "e").exists()  # neither the partial file nor the folder made for it remain


def test_idx_files_plain_or_gz_in_bench_data_and_torchvision_layout(tmp_path, monkeypatch):
    arrays = _write_mnist_files(tmp_path / "MNIST" / "raw", gz=False)
    monkeypatch.setenv("BENCH_DATA", str(tmp_path))
    s = load("mnist", val_fraction=0.0)
    assert len(s.val_y) == 0 and len(s.train_y) == 60
    raw = torch.from_numpy(arrays["train-images-idx3-ubyte"])
    assert torch.equal(s.train_x[:, 0, 2:30, 2:30], raw[s.train_index])
    assert torch.equal(s.train_y, torch.from_numpy(arrays["train-labels-idx1-ubyte"]).long()[s.train_index])
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(BenchError, match="t10k-labels-idx1-ubyte"):
        load("mnist")


def test_cifar_pickles_are_read(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    names = [f"c{i}" for i in range(10)]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [n.encode() for n in names]}, fh)
    batches = {}
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[f] = (rng.integers(0, 256, (8, 3072), dtype=np.uint8), list(rng.integers(0, 10, 8)))
        with open(folder / f, "wb") as fh:
            pickle.dump({b"data": batches[f][0], b"labels": batches[f][1]}, fh)
    s = load("cifar10", data_dir=str(tmp_path), val_fraction=0.1)
    assert s.classes == names and s.train_x.shape[1:] == (3, 32, 32) and len(s.test_y) == 8
    assert len(s.train_y) + len(s.val_y) == 40 and s.info["resize"] is None
    assert torch.equal(s.test_x, torch.from_numpy(batches["test_batch"][0]).view(8, 3, 32, 32))
    assert s.test_y.tolist() == [int(v) for v in batches["test_batch"][1]]
    assert len(s.mean) == 3 and len(s.std) == 3


class _RunsCommand:
    """Unpickling this calls os.system(command): what a hostile batches.meta would hold."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def test_cifar_pickles_that_run_code_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / f, "wb") as fh:
            pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, fh)
    witness = tmp_path / "pwned"
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": _RunsCommand(f"touch {witness}")}, fh)
    with pytest.raises(BenchError) as excinfo:
        load("cifar10", data_dir=str(tmp_path))
    msg = single_line_error(excinfo)
    assert str(folder / "batches.meta") in msg and "system" in msg
    assert not witness.exists()

    line = command_error(
        "bench.train",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path),
        "--epochs",
        "1",
        env={**os.environ, "BENCH_OFFLINE": "1"},
    )
    assert line.startswith("error: cannot read ") and "batches.meta" in line
    assert not witness.exists()


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(BenchError, match="choose one of"):
        load("imagenet")
    with pytest.raises(BenchError, match="val fraction"):
        load("synthetic", val_fraction=1.0)
    with pytest.raises(BenchError, match="image size"):
        load("synthetic", image_size=3)
    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="CUDA is not available"):
            load("synthetic", device="cuda")


# --------------------------------------------------------------------------------------------------
# batches()


def make_splits(x: torch.Tensor, y: torch.Tensor, mean=None, std=None) -> Splits:
    c = x.shape[1]
    mean = mean if mean is not None else (0.0,) * c
    std = std if std is not None else (1.0,) * c
    empty_x, empty_y = x[:0], y[:0]
    return Splits(
        x,
        y,
        empty_x,
        empty_y,
        x.clone(),
        y.clone(),
        classes=[str(i) for i in range(10)],
        mean=tuple(mean),
        std=tuple(std),
        info={},
    )


def test_labels_travel_with_their_images():
    n = 300
    y = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(5))
    x = (y * 20).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    s = make_splits(x, y)
    seen = []
    for xb, yb in s.batches("train", 64, generator=torch.Generator().manual_seed(0), augment=True, shuffle=True):
        assert xb.dtype == torch.float32 and yb.dtype == torch.int64
        centre = (xb[:, :, 8, 8] * 255).round().long()  # a shift of <= 4 never moves the border to the centre
        assert torch.equal(centre, (yb * 20)[:, None].expand(-1, 3))
        seen.append(yb)
    seen = torch.cat(seen)
    assert len(seen) == n and torch.equal(seen.sort().values, y.sort().values)
    assert not torch.equal(seen, y)  # shuffled


def test_same_generator_seed_same_batches_and_resume():
    s = load("synthetic:size=300", image_size=16)

    def run(seed, **kw):
        g = torch.Generator().manual_seed(seed)
        return [b for b in s.batches("train", 50, generator=g, augment=True, shuffle=True, **kw)], g

    a, ga = run(7)
    b, gb = run(7)
    assert len(a) == len(b) == s.num_batches("train", 50)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    c, _ = run(8)
    assert not torch.equal(a[0][0], c[0][0])
    # resuming at batch 2 from the generator state of the pass's start gives the same remaining batches,
    # and leaves the generator where the full pass left it
    r, gr = run(7, start_batch=2)
    assert len(r) == len(a) - 2
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a[2:], r))
    assert torch.equal(gr.get_state(), ga.get_state())


def test_augment_changes_images_but_keeps_shape_dtype_and_stats():
    s = load("synthetic:channels=3,size=600", image_size=32)
    g = torch.Generator().manual_seed(0)
    plain = torch.cat([x for x, _ in s.batches("train", 128)])
    aug = torch.cat([x for x, _ in s.batches("train", 128, augment=True, generator=g)])
    assert plain.shape == aug.shape and aug.dtype == torch.float32
    # normalised with the training split's own statistics
    assert plain.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (plain.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    assert (aug - plain).abs().mean() > 0.1
    # the centre never sees the zero padding: there the statistics are unchanged; overall, the black
    # padding (standard RandomCrop(padding=4) behaviour) pulls the mean down a little
    inner = aug[:, :, 4:-4, 4:-4]
    assert inner.mean(dim=(0, 2, 3)).abs().max() < 0.05 and (inner.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05
    assert (aug.mean(dim=(0, 2, 3)) - plain.mean(dim=(0, 2, 3))).abs().max() < 0.5
    assert 0.8 < aug.std().item() < 1.5


def test_crop_shifts_by_at_most_4_and_flip_mirrors():
    n, h, w = 400, 20, 20
    r0, c0 = 9, 6
    x = torch.zeros(n, 1, h, w, dtype=torch.uint8)
    x[:, 0, r0, c0] = 255
    s = make_splits(x, torch.zeros(n, dtype=torch.long))
    ((xb, _),) = list(s.batches("train", n, augment=True, generator=torch.Generator().manual_seed(1)))
    flat = xb.view(n, -1)
    assert torch.equal((flat == 1.0).sum(1), torch.ones(n, dtype=torch.long))  # exactly one pixel survives
    pos = flat.argmax(1)
    rows, cols = pos // w, pos % w
    dr = rows - r0
    direct, mirrored = cols - c0, cols - (w - 1 - c0)
    flipped = direct.abs() > 4
    assert dr.abs().max() <= 4 and set(dr.tolist()) == set(range(-4, 5))
    assert (mirrored[flipped].abs() <= 4).all()
    assert set(direct[~flipped].tolist()) == set(range(-4, 5))
    assert 0.35 < flipped.float().mean() < 0.65


def test_crop_flip_matches_a_per_sample_reference():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (50, 3, 12, 10), generator=g, dtype=torch.uint8)
    offsets = torch.randint(0, 9, (50, 2), generator=g)
    flips = torch.rand(50, generator=g) < 0.5
    out = crop_flip(x, offsets, flips)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(50):
        dy, dx = offsets[i].tolist()
        ref = padded[i, :, dy : dy + 12, dx : dx + 10]
        if flips[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref)


def test_channels_last_drop_last_and_num_batches():
    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    s = make_splits(x, torch.arange(10) % 10)
    sizes = [len(y) for _, y in s.batches("train", 4)]
    assert sizes == [4, 4, 2] and s.num_batches("train", 4) == 3
    sizes = [len(y) for _, y in s.batches("train", 4, drop_last=True, shuffle=True)]
    assert sizes == [4, 4] and s.num_batches("train", 4, drop_last=True) == 2
    xb, _ = next(s.batches("test", 4, channels_last=True, augment=True))
    assert xb.is_contiguous(memory_format=torch.channels_last) and not xb.is_contiguous()
    xb, _ = next(s.batches("test", 4))
    assert xb.is_contiguous()
    assert list(s.batches("val", 4)) == []
    with pytest.raises(BenchError, match="choose one of"):
        next(s.batches("dev", 4))
    with pytest.raises(BenchError, match="batch size"):
        next(s.batches("train", 0))


# --------------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_is_deterministic_and_configurable():
    a = load("synthetic")
    b = load("synthetic")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert a.train_x.shape[1:] == (1, 32, 32) and (len(a.train_y) + len(a.val_y), len(a.test_y)) == (2000, 500)
    assert a.info["source"] == "generated" and a.num_classes == 10
    c = load("synthetic", split_seed=1)
    assert not torch.equal(c.val_index, a.val_index) and torch.equal(c.test_x, a.test_x)
    d = load("synthetic:classes=4,channels=3,size=400,noise=0.5", image_size=24, val_fraction=0.25)
    assert d.train_x.shape[1:] == (3, 24, 24) and d.num_classes == 4
    assert (len(d.train_y), len(d.val_y)) == (300, 100) and d.info["options"]["noise"] == 0.5
    assert sorted(d.test_y.unique().tolist()) == [0, 1, 2, 3]
    with pytest.raises(BenchError, match="unknown synthetic option 'colour'"):
        load("synthetic:colour=3")
    with pytest.raises(BenchError, match="not a int"):
        load("synthetic:classes=many")


def test_synthetic_is_learnable_but_not_trivial():
    s = load("synthetic")
    xtr = s.train_x.float().flatten(1)
    xte = s.test_x.float().flatten(1)
    means = torch.stack([xtr[s.train_y == k].mean(0) for k in range(s.num_classes)])
    acc = (torch.cdist(xte, means).argmin(1) == s.test_y).float().mean().item()
    assert 0.35 < acc < 0.95, acc  # chance is 0.10; shifts keep a nearest-class-mean probe well short of 100%


# --------------------------------------------------------------------------------------------------
# imagefolder

COLOURS = {"cat": (220, 30, 30), "dog": (30, 220, 30), "eel": (30, 30, 220)}


def make_tree(root: Path, n: int = 10, classes=COLOURS, grey: bool = False) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, colour in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            w, h = 20 + 3 * i, 16 + 2 * (i % 3)
            arr = np.clip(np.array(colour)[None, None] + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr)
            if grey:
                img = img.convert("L")
            img.save(root / cls / f"{i:02d}.png")
    return root


def test_imagefolder_single_tree_split_and_cache(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "pics")
    (root / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    s = load(f"imagefolder:{root}", image_size=16, split_seed=0)
    assert s.classes == ["cat", "dog", "eel"] and s.train_x.shape[1:] == (3, 16, 16)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (24, 3, 3)
    info = s.info
    assert info["layout"] == "single tree" and info["cache"] == "miss" and info["mode"] == "RGB"
    assert info["source"] == str(root.resolve()) and info["test_fraction"] == 0.1 and info["val_fraction"] == 0.1
    for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y)):
        assert torch.equal(x.float().mean(dim=(2, 3)).argmax(1), y)  # each image's dominant colour is its class
    assert json.loads(json.dumps(info)) == info
    assert Path(info["cache_file"]).is_file()
    assert Path(info["cache_file"]).parent == tmp_path / "bench-cache" / "imagefolder"

    import PIL.Image

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(PIL.Image, "open", no_decoding)
    monkeypatch.setattr(data.images, "decode_bytes", no_decoding)
    again = load(f"imagefolder:{root}", image_size=16, split_seed=0)
    assert again.info["cache"] == "hit"
    assert torch.equal(again.train_x, s.train_x) and torch.equal(again.test_y, s.test_y)
    other = load(f"imagefolder:{root}", image_size=16, split_seed=1)  # a new split reuses the same decode
    assert other.info["cache"] == "hit" and not torch.equal(other.train_index, s.train_index)
    monkeypatch.undo()
    (root / "dog" / "99.png").write_bytes((root / "dog" / "00.png").read_bytes())
    changed = load(f"imagefolder:{root}", image_size=16)
    assert changed.info["cache"] == "miss" and changed.info["pool_size"] == 31


def test_imagefolder_greyscale_and_folder_layouts(tmp_path):
    grey = load(f"imagefolder:{make_tree(tmp_path / 'grey', n=4, grey=True)}", image_size=12)
    assert grey.in_channels == 1 and grey.info["mode"] == "L"

    layered = tmp_path / "layered"
    make_tree(layered / "train", n=8)
    make_tree(layered / "val", n=2)
    s = load(f"imagefolder:{layered}", image_size=16)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (24, 6, 6)
    assert s.info["layout"] == "train/ folders" and s.info["test_source"].startswith("val/")
    assert torch.equal(s.val_x, s.test_x) and s.info["val_fraction"] is None
    make_tree(layered / "test", n=3)
    t = load(f"imagefolder:{layered}", image_size=16)
    assert (len(t.train_y), len(t.val_y), len(t.test_y)) == (24, 6, 9) and t.info["test_source"] == "test/"
    assert torch.equal(t.test_x.float().mean(dim=(2, 3)).argmax(1), t.test_y)


def test_imagefolder_rejections(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        load(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no class folders"):
        load(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(BenchError, match="only one class"):
        load(f"imagefolder:{make_tree(tmp_path / 'one', n=2, classes={'cat': (1, 2, 3)})}")
    bad = make_tree(tmp_path / "bad", n=3)
    (bad / "dog" / "broken.png").write_bytes(b"\x89PNG this is not really an image")
    with pytest.raises(BenchError) as excinfo:
        load(f"imagefolder:{bad}", image_size=16)
    msg = single_line_error(excinfo)
    assert str(bad / "dog" / "broken.png") in msg
    truncated = make_tree(tmp_path / "trunc", n=3)
    whole = (truncated / "eel" / "01.png").read_bytes()
    (truncated / "eel" / "01.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BenchError, match="eel/01.png"):
        load(f"imagefolder:{truncated}", image_size=16)
    mismatch = tmp_path / "mismatch"
    make_tree(mismatch / "train", n=3)
    make_tree(mismatch / "val", n=1, classes={"cat": (1, 1, 1), "dog": (2, 2, 2), "fox": (3, 3, 3)})
    with pytest.raises(BenchError, match="different class folders.*missing \\['eel'\\], extra \\['fox'\\]"):
        load(f"imagefolder:{mismatch}", image_size=16)
    with pytest.raises(BenchError, match="needs a path"):
        load("imagefolder:")
