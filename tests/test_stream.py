"""Image folders under the paper's scale protocol: streamed or held, same batches, resume, bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import command_error, stop_after
from torchvision.transforms.v2 import functional as TF

from bench import data
from bench.config import RunConfig
from bench.data import stream, views
from bench.engine.train import fit
from bench.errors import BenchError

pytestmark = pytest.mark.usefixtures("isolated_cache")


def config(tree, **changes) -> RunConfig:
    settings = dict(
        dataset=f"imagefolder:{tree}",
        image_size=32,
        train_scale="256,512",
        loader_workers=2,
        model="vgg-a",
        width=0.0625,
        epochs=2,
        batch_size=16,
        lr=0.01,
    )
    return RunConfig(**{**settings, **changes})


def one_pass(splits, seed=5, start_batch=0):
    g = torch.Generator().manual_seed(seed)
    return list(
        splits.batches("train", 8, generator=g, augment=True, shuffle=True, drop_last=True, start_batch=start_batch)
    )


def test_same_config_same_batches_held_or_streamed_any_workers_and_resumed(tree, monkeypatch):
    held = data.open_run(config(tree, data_holder="memory"))
    streamed = data.open_run(config(tree, data_holder="stream", loader_workers=0))
    assert held.info["holder"] == "memory" and streamed.info["holder"] == "stream"
    assert held.info["train_scale_px"] == [37, 73] and held.info["test_scales_px"] == [55]
    a, b = one_pass(held), one_pass(streamed)
    assert len(a) == len(held.parts["train"].files) // 8
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Decoded a batch at a time (as on a GPU, where the decode is nvjpeg's): the same views.
    batch_decoded = data.open_run(config(tree, data_holder="stream"))
    batch_decoded.batch_decode = True
    decoded_batches = []
    original = views.decode_on
    monkeypatch.setattr(views, "decode_on", lambda *args: decoded_batches.append(1) or original(*args))
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, one_pass(batch_decoded)))
    assert len(decoded_batches) == len(a)  # every batch went through the batch decoder
    resumed = one_pass(streamed, start_batch=3)
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a[3:], resumed)) and len(resumed) == len(a) - 3
    other = one_pass(held, seed=6)
    assert not torch.equal(other[0][0], a[0][0])  # the generator, not luck, decides the views
    # Labels follow the files: each generated class has its own colour pattern, so views of one class
    # are closer to their class mean than to the others' (a check that labels and images stay paired).
    xs = torch.cat([x for x, _ in a]).mean(dim=(2, 3))
    ys = torch.cat([y for _, y in a])
    means = torch.stack([xs[ys == k].mean(0) for k in range(3)])
    assert (torch.cdist(xs, means).argmin(1) == ys).float().mean() > 0.6  # chance: 0.33


def test_train_view_is_rescale_then_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, 60, 80, generator=g) * 255).to(torch.uint8)
    image = TF.gaussian_blur(image, [9, 9], [3.0, 3.0])  # smooth, so rounding the source box barely shows
    s, crop = 45, 32
    whole = TF.resize(image, s, antialias=True)  # shorter side 45: 45 x 60
    for uy, ux in ((0.0, 0.0), (0.5, 0.5), (1.0, 1.0), (0.3, 0.8)):
        top = min(int(uy * (whole.shape[1] - crop + 1)), whole.shape[1] - crop)
        left = min(int(ux * (whole.shape[2] - crop + 1)), whole.shape[2] - crop)
        want = whole[:, top : top + crop, left : left + crop].float()
        got = views.train_view(image, s, uy, ux, False, crop).float()
        assert got.shape == (3, crop, crop)
        assert (got - want).abs().mean() < 6, (uy, ux)
    assert torch.equal(
        views.train_view(image, s, 0.3, 0.8, True, crop), views.train_view(image, s, 0.3, 0.8, False, crop).flip(-1)
    )
    assert stream.Scales.at_crop(32, (256, 512), (384,)) == stream.Scales(32, (37, 73), (55,))
    assert stream.Scales.at_crop(224, (256, 512), (224,)) == stream.Scales(224, (256, 512), (224,))


def test_auto_holder_follows_the_estimated_size(tree, monkeypatch):
    assert data.open_run(config(tree)).info["holder"] == "memory"
    monkeypatch.setattr(stream, "MEMORY_FRACTION", 1e-9)
    splits = data.open_run(config(tree))
    assert splits.info["holder"] == "stream" and splits.parts["train"].held is None
    # Without the scale protocol a set too large for memory is streamed at S = Q = the crop.
    plain = data.open_run(config(tree, train_scale=None))
    assert isinstance(plain, data.StreamSplits) and plain.info["train_scale_px"] == [32, 32]
    monkeypatch.undo()
    assert isinstance(data.open_run(config(tree, train_scale=None)), data.Splits)


def test_training_resumes_on_a_streamed_folder(tree, tmp_path):
    cfg = config(tree, data_holder="stream", test_scales="224,288", eval_modes="centre,dense+multi-crop")
    straight = fit(cfg, checkpoint_dir=tmp_path / "straight")

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, checkpoint_dir=tmp_path / "cut", on_epoch=stop_after(1))
    resumed = fit(cfg, checkpoint_dir=tmp_path / "cut")
    assert [h.val_loss for h in resumed.history] == [h.val_loss for h in straight.history]
    assert resumed.test_acc == straight.test_acc and resumed.input_shape == (3, 32, 32)
    assert straight.data_info["holder"] == "stream"
    assert resumed.evaluations == straight.evaluations and len(straight.evaluations) == 2 * 3 * 2
    assert "test_top5_dense_and_multi-crop_multiscale" in straight.evaluations


def test_bad_files_stop_with_one_line_naming_them(tree, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tree, bad)
    (bad / "train" / "class001" / "notes.jpg").write_text("not an image")
    with pytest.raises(BenchError) as excinfo:
        data.open_run(config(bad, data_holder="stream"))
    assert "notes.jpg" in str(excinfo.value) and "\n" not in str(excinfo.value)
    (bad / "train" / "class001" / "notes.jpg").unlink()
    victim = bad / "val" / "class002" / "000001.jpg"
    victim.write_bytes(victim.read_bytes()[:-400])  # a truncated JPEG: its header still reads
    with pytest.raises(BenchError, match="000001.jpg") as excinfo:
        data.open_run(config(bad, data_holder="memory"))  # held: found while decoding, before training
    assert "\n" not in str(excinfo.value)
    splits = data.open_run(config(bad, data_holder="stream"))  # streamed: found when its batch is read
    for batch_decode in (False, True):  # one bad file in a batch decoded at once is named too
        splits.batch_decode = batch_decode
        with pytest.raises(BenchError, match="cannot decode image .*class002/000001.jpg") as excinfo:
            for _ in splits.batches("val", 8):
                pass
        assert "\n" not in str(excinfo.value)
    (bad / "train" / "class000").rename(bad / "train" / ".hidden")
    (bad / "train" / "class003").mkdir()
    with pytest.raises(BenchError, match="class003 has no images"):
        data.open_run(config(bad))


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"train_scale": "512,256"}, "min > max"),
        ({"train_scale": "256", "test_scales": "200"}, "test scale Q 200 is smaller than the crop"),
        ({"train_scale": "inf"}, "whole pixel sizes"),
        ({"train_scale": "256,nan"}, "whole pixel sizes"),
        ({"test_scales": "256"}, "need train_scale"),
        ({"train_scale": "256", "eval_modes": "centre,sideways"}, "unknown evaluation mode"),
        ({"data_holder": "stream", "dataset": "cifar10"}, "image folders only"),
    ],
)
def test_bad_scale_settings_are_one_line(tree, settings, fragment):
    with pytest.raises(BenchError, match=fragment) as excinfo:
        RunConfig.from_dict({"dataset": f"imagefolder:{tree}", **settings})
    assert "\n" not in str(excinfo.value)


def test_bad_scale_setting_on_the_command_line_is_exit_2(tree, tmp_path):
    assert "min > max" in command_error(
        "bench.train",
        "--dataset",
        f"imagefolder:{tree}",
        "--train-scale",
        "512,256",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert not (tmp_path / "ck").exists()


def test_gpu_decoding_without_cuda_is_one_line_before_training(tree, tmp_path):
    message = command_error(
        "bench.train",
        "--dataset",
        f"imagefolder:{tree}",
        "--train-scale",
        "256",
        "--data-holder",
        "stream-gpu",
        "--device",
        "cpu",
        "--checkpoint-dir",
        str(tmp_path / "ck"),
    )
    assert "decodes JPEGs on a CUDA device" in message and "--data-holder stream" in message
    assert not (tmp_path / "ck").exists()


def test_empty_folder_is_one_line(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(BenchError, match="no class folders"):
        data.open_run(RunConfig(dataset=f"imagefolder:{tmp_path / 'empty'}", train_scale="256"))
