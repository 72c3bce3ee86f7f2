"""After training: bench.predict, transfer learning (studies/transfer.toml), bench.post.

Everything real and tiny: one VGG trained on a learnable synthetic task and logged to a sqlite
MLflow store the way the runner logs it, an ImageFolder of PNG files drawn here, pretrained files
saved from real models, ONNX checked by onnxruntime.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import error_line, main_error, needs_fashion, study_runs
from PIL import Image, ImageDraw

from bench import ablation, data, models, predict
from bench.config import RunConfig
from bench.engine import checkpoint
from bench.engine.train import Engine, build_model, fit
from bench.post import command as post
from bench.post import compress, onnx_export
from bench.run import studies
from bench.tracking import Tracker

# A task VGG-A learns in two short epochs (4 classes, chance 25 %), with a head where Linear layers
# hold most of the weights, so that int8 quantisation of Linear has something to shrink.
TRAINED = RunConfig(
    model="vgg-a",
    batch_norm=True,
    head="light",
    dropout=0.0,
    width=0.0625,
    dataset="synthetic:classes=4,noise=0.5,size=800",
    epochs=2,
    batch_size=32,
    optimizer="adam",
    lr=0.003,
    weight_decay=0.0,
    augment=False,
    device="cpu",
)
SMALL_VGG16 = dict(batch_norm=False, head="paper", width=0.0625, in_channels=3)  # the transfer smoke budget


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished MLflow run with its best checkpoint, logged as bench.run.runner logs one."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # a sqlite store keeps artifacts in ./mlruns of where it was created
        tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}")
        experiment = tracker.experiment_id("after-training")
        parent = tracker.create_parent(experiment, "study", {})
        run_id = tracker.start_child(experiment, parent, TRAINED, "vgg-a seed=0", {})
        result = fit(TRAINED, checkpoint_dir=root / "checkpoints")
        tracker.log_result(run_id, TRAINED, result, "vgg-a")
        tracker.set_status(run_id, "FINISHED")
    return dict(uri=tracker.uri, run_id=run_id, checkpoint=Path(result.best_checkpoint), result=result, root=root)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """A real ImageFolder: 3 classes of coloured shapes, 14 PNG files each, varied size and place."""
    root = tmp_path_factory.mktemp("shapes")
    rng = random.Random(0)
    for name, colour in (("circle", (220, 40, 40)), ("square", (40, 200, 60)), ("triangle", (50, 70, 230))):
        (root / name).mkdir()
        for i in range(14):
            image = Image.new("RGB", (40, 40), tuple(rng.randrange(0, 60) for _ in range(3)))
            size, x, y = rng.randrange(14, 26), rng.randrange(0, 12), rng.randrange(0, 12)
            draw = ImageDraw.Draw(image)
            box = (x, y, x + size, y + size)
            if name == "circle":
                draw.ellipse(box, fill=colour)
            elif name == "square":
                draw.rectangle(box, fill=colour)
            else:
                draw.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=colour)
            image.save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """VGG-16's layout (our vgg-d = torchvision's vgg16 names) at width 1/16, 1000 ImageNet classes."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("pretrained") / "vgg16-small.pth"
    torch.save(models.build("vgg-d", num_classes=1000, **SMALL_VGG16).state_dict(), path)
    return path


def save_png(image: torch.Tensor, path: Path) -> Path:
    """A uint8 [C, H, W] tensor as a PNG file (greyscale for one channel)."""
    pixels = image.permute(1, 2, 0).numpy()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
    return path


# --- predict -----------------------------------------------------------------------------------


def test_predictions_match_the_models_forward_on_the_training_path(trained_run, tmp_path, capsys):
    trained = predict.load_trained(checkpoint_path=trained_run["checkpoint"])
    splits = trained.splits
    paths = [save_png(splits.test_x[i], tmp_path / f"t{i}.png") for i in range(6)]

    # A test image saved as PNG comes back as exactly the tensor its batch gave the model.
    batch = next(splits.batches("test", 6))[0]
    inputs = torch.stack([predict.preprocess(trained, p) for p in paths])
    assert torch.equal(inputs, batch)

    with torch.no_grad():
        expected = trained.model(batch).softmax(1)
    assert torch.allclose(predict.probabilities(trained.model, inputs), expected, atol=1e-6)
    # ...and the reloaded model is the run's best model: same test predictions as fit reported.
    assert predict.test_predictions(trained.model, splits).tolist() == trained_run["result"].predictions

    # The test runs in tmp_path: bare file names keep the table's rows on one line each.
    assert predict.main(["--checkpoint", str(trained_run["checkpoint"]), *(p.name for p in paths)]) == 0
    out = capsys.readouterr().out
    for path, probs in zip(paths, expected):
        line = next(line for line in out.splitlines() if path.name in line)
        assert splits.classes[int(probs.argmax())] in line
        assert f"{float(probs.max()):.1%}" in line


@needs_fashion
def test_a_fashion_mnist_image_goes_through_the_padding_and_statistics_of_its_run(tmp_path):
    config = RunConfig(model="vgg-a", width=0.0625, dataset="fashion-mnist", subset=2000, device="cpu")
    splits = data.load(config.dataset, subset=config.subset, split_seed=config.split_seed)
    model = build_model(config, splits)
    checkpoint.save(
        tmp_path / "untrained.pt", {"config": config.to_dict(), "config_hash": config.hash, "model": model.state_dict()}
    )
    trained = predict.load_trained(checkpoint_path=tmp_path / "untrained.pt")
    assert trained.splits.mean == splits.mean and trained.splits.std == splits.std  # the run's subset stats

    padded = splits.test_x[0]  # 28 px zero-padded to 32 at load
    assert padded[:, :2].sum() == 0
    native = save_png(padded[:, 2:30, 2:30], tmp_path / "native.png")
    expected = predict.normalise(splits, padded[None])[0]
    assert torch.equal(predict.preprocess(trained, native), expected)
    # --invert flips the 28 px image, not the black border that padding adds afterwards.
    flipped = padded.clone()
    flipped[:, 2:30, 2:30] = 255 - flipped[:, 2:30, 2:30]
    assert torch.equal(predict.preprocess(trained, native, invert="yes"), predict.normalise(splits, flipped[None])[0])
    # A colour photo of any size becomes one channel at 32 px.
    photo = Image.fromarray(padded[0, 2:30, 2:30].numpy()).convert("RGB").resize((84, 112))
    photo.save(tmp_path / "photo.jpg")
    assert predict.preprocess(trained, tmp_path / "photo.jpg").shape == (1, 32, 32)


def test_grid_and_confusion_are_written_and_logged_to_the_run(trained_run, tmp_path, capsys):
    run_id = trained_run["run_id"]
    assert (
        predict.main(
            [
                "--run",
                run_id,
                "--tracking-uri",
                trained_run["uri"],
                "--grid",
                "6",
                "--confusion",
                "--out-dir",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    grid = tmp_path / "out" / f"predictions-run-{run_id[:8]}.png"
    confusion = tmp_path / "out" / f"confusion-run-{run_id[:8]}.png"
    for path in (grid, confusion):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(grid) as image:
        assert image.size[0] > 300  # a 3x2 grid of panels, not an empty figure
    logged = {a.path for a in Tracker(trained_run["uri"]).client.list_artifacts(run_id, "predict")}
    assert logged == {f"predict/{grid.name}", f"predict/{confusion.name}"}
    out = capsys.readouterr().out
    result = trained_run["result"]
    total = next(line for line in out.splitlines() if line.strip("│ ").startswith("all"))
    assert f"{result.test_acc:.4f}" in total and str(len(result.labels)) in total


# --- post: compress and export ----------------------------------------------------------------


def test_post_measures_every_variant_in_a_child_run_of_the_source(trained_run, tmp_path):
    source = trained_run["run_id"]
    assert (
        post.main(
            [
                "--run",
                source,
                "--tracking-uri",
                trained_run["uri"],
                "--all",
                "--repeats",
                "3",
                "--threads",
                "1",
                "--out-dir",
                str(tmp_path / "post"),
            ]
        )
        == 0
    )
    client = Tracker(trained_run["uri"]).client
    children = client.search_runs(
        [client.get_run(source).info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{source}'"
    )
    assert len(children) == 1
    child = children[0]
    assert child.info.status == "FINISHED" and child.data.tags["bench.role"] == "post"
    m = child.data.metrics
    fp32_acc = trained_run["result"].test_acc
    assert m["fp32.test_acc"] == pytest.approx(fp32_acc, abs=1e-9)  # the run's model, the run's test set

    # int8 dynamic quantisation: Linear holds most weights here, so the file is over 1.8x smaller,
    # and the model still predicts far above chance (0.25), close to fp32.
    assert m["int8-dynamic.size_ratio"] > 1.8
    assert m["int8-dynamic.test_acc"] > 0.5 and abs(m["int8-dynamic.acc_delta"]) < 0.1
    # Pruning: the asked-for fraction of weights is zero, the dense file does not shrink, gzip does.
    for amount in (0.3, 0.5, 0.7):
        name = f"pruned-{100 * amount:g}"
        assert m[f"{name}.sparsity"] == pytest.approx(amount, abs=0.005)
        assert m[f"{name}.size_ratio"] == pytest.approx(1.0, abs=0.02)
    assert m["pruned-70.gzip_bytes"] < m["pruned-50.gzip_bytes"] < m["pruned-30.gzip_bytes"] < m["fp32.gzip_bytes"]
    assert m["pruned-30.test_acc"] > 0.45
    # ONNX: onnxruntime gives the same predictions as PyTorch on the whole test set.
    assert m["onnx.test_acc"] == pytest.approx(fp32_acc, abs=1e-9)
    for v in ("fp32", "int8-dynamic", "pruned-50", "onnx"):  # every format timed at batch 1 and 32
        for b in (1, 32):
            assert 0 < m[f"{v}.ms_b{b}_low"] <= m[f"{v}.ms_b{b}"] <= m[f"{v}.ms_b{b}_high"]
            assert m[f"{v}.images_per_s_b{b}"] == pytest.approx(1000 * b / m[f"{v}.ms_b{b}"])

    # The pruned file is a plain state_dict that loads into a fresh model.
    state = torch.load(tmp_path / "post" / "pruned-50.pt", weights_only=True)
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    checkpoint.load_weights(predict.load_trained(checkpoint_path=trained_run["checkpoint"]).model, state, "pruned")
    artifacts = {a.path for folder in ("post", "onnx") for a in client.list_artifacts(child.info.run_id, folder)}
    assert {"post/summary.md", "post/summary.csv", "onnx/model.onnx"} <= artifacts


def test_onnx_export_has_a_dynamic_batch_and_matches_pytorch(tmp_path):
    import onnx
    import onnxruntime

    torch.manual_seed(0)
    # The paper head pools a 1x1 map to 7x7: the case the exporter cannot express directly.
    model = models.build("vgg-a", width=0.0625, head="paper", in_channels=3, batch_norm=True).eval()
    path = onnx_export.export_onnx(model, (3, 32, 32), tmp_path / "m.onnx")
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == (batch, 10)
        assert abs(got - expected).max() < 1e-4


def test_pruning_and_quantisation_units():
    torch.manual_seed(0)
    model = models.build("vgg-a", width=0.0625, head="light", in_channels=1).eval()
    for amount in (0.3, 0.5):
        layered = compress.prune_weights(model, amount, "layer")
        for module, _ in compress.prunable(layered):
            assert float((module.weight == 0).float().mean()) == pytest.approx(
                amount, abs=0.5 / module.weight.numel() + 1e-9
            )
        pruned = compress.prune_weights(model, amount, "global")
        assert compress.sparsity(pruned) == pytest.approx(amount, abs=1e-3)
    assert compress.sparsity(model) == 0.0  # pruning works on copies
    quantized = compress.quantize_linear(model)
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert sum(isinstance(m, dynamic) for m in quantized.modules()) == 3  # the light head's three
    assert not any(type(m) is torch.nn.Linear for m in quantized.modules())
    assert sum(type(m) is torch.nn.Conv2d for m in quantized.modules()) == 8  # convs stay fp32
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(quantized(x), model(x), atol=0.05 * float(model(x).abs().max()) + 1e-3)


# --- transfer learning -------------------------------------------------------------------------


def transfer_config(folder: Path, weights: Path, **settings) -> RunConfig:
    values = dict(
        model="vgg-d",
        dataset=f"imagefolder:{folder}",
        image_size=32,
        pretrained=str(weights),
        epochs=1,
        batch_size=16,
        device="cpu",
        **{k: v for k, v in SMALL_VGG16.items() if k != "in_channels"},
    )
    return RunConfig.from_dict({**values, **settings})


def test_fine_tuning_starts_from_the_pretrained_weights_except_the_new_last_layer(shapes, pretrained):
    config = transfer_config(shapes, pretrained)
    splits = data.load(config.dataset, image_size=32)
    model = build_model(config, splits)
    own, theirs = model.state_dict(), torch.load(pretrained, weights_only=True)
    replaced = {k for k in own if not torch.equal(own[k], theirs[k]) if own[k].shape == theirs[k].shape} | {
        k for k in own if own[k].shape != theirs[k].shape
    }
    assert replaced == {"classifier.6.weight", "classifier.6.bias"}
    assert own["classifier.6.weight"].shape == (3, theirs["classifier.6.weight"].shape[1])


def test_backbone_lr_scale_is_applied_and_zero_keeps_the_backbone(shapes, pretrained):
    theirs = torch.load(pretrained, weights_only=True)
    engine = Engine(transfer_config(shapes, pretrained, backbone_lr_scale=0.1, warmup_epochs=0.0, schedule="constant"))
    head = set(map(id, engine.model.classifier[6].parameters()))
    for group in engine.optimizer.param_groups:
        assert group["lr_scale"] == (1.0 if {id(p) for p in group["params"]} <= head else 0.1)
    engine.train_epoch(1, [])
    lrs = {group["lr_scale"]: group["lr"] for group in engine.optimizer.param_groups}
    assert lrs == {1.0: pytest.approx(0.05), 0.1: pytest.approx(0.005)}

    still = Engine(transfer_config(shapes, pretrained, backbone_lr_scale=0.0))
    still.train_epoch(1, [])
    after = still.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in theirs.items() if not k.startswith("classifier.6"))
    assert not torch.equal(after["classifier.6.bias"], torch.zeros(3))  # the new head did learn


def test_transfer_study_scratch_vs_fine_tuned_vs_frozen(shapes, pretrained, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [
        "--study",
        "transfer",
        "--budget",
        "smoke",
        "--dataset",
        f"imagefolder:{shapes}",
        "--pretrained",
        str(pretrained),
        "--tracking-uri",
        uri,
        "--storage",
        str(tmp_path / "optuna.journal"),
        "--checkpoint-root",
        str(tmp_path / "ck"),
        "--quiet",
    ]
    assert ablation.main(argv) == 0
    points = {
        p.variant: p.config
        for p in studies.load("transfer").grid(
            "smoke", {"dataset": f"imagefolder:{shapes}", "pretrained": str(pretrained)}
        )
    }
    assert points["scratch"].pretrained is None and points["fine-tuned"].pretrained == str(pretrained)

    client = Tracker(uri).client
    runs = study_runs(client, "transfer")
    assert sorted(r.data.tags["bench.variant"] for r in runs if r.info.status == "FINISHED") == [
        "fine-tuned",
        "frozen",
        "scratch",
    ]

    theirs = torch.load(pretrained, weights_only=True)

    def best(variant: str) -> dict:
        return checkpoint.load(tmp_path / "ck" / points[variant].hash / "best.pt")["model"]

    frozen, tuned, scratch = best("frozen"), best("fine-tuned"), best("scratch")
    conv_keys = [k for k in theirs if k.startswith("features.")]
    assert len(conv_keys) == 26  # 13 convs, weight and bias
    assert all(torch.equal(frozen[k], theirs[k]) for k in conv_keys)  # frozen: unchanged by training
    assert not torch.equal(frozen["classifier.0.weight"], theirs["classifier.0.weight"])  # the head learned
    assert not all(torch.equal(tuned[k], theirs[k]) for k in conv_keys)  # fine-tuned: convs moved...
    assert max(float((tuned[k] - theirs[k]).abs().max()) for k in conv_keys) < 0.5 * max(
        float((scratch[k] - theirs[k]).abs().max()) for k in conv_keys
    )  # ...from the pretrained start


def test_a_real_torchvision_state_dict_loads_as_pretrained(shapes, tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=1000)
    torch.save(reference.state_dict(), tmp_path / "mobilenet.pth")
    config = RunConfig(
        model="mobilenetv2",
        width=0.25,
        dataset=f"imagefolder:{shapes}",
        image_size=96,
        pretrained=str(tmp_path / "mobilenet.pth"),
        device="cpu",
    )
    model = build_model(config, data.load(config.dataset, image_size=96))
    own, theirs = model.state_dict(), reference.state_dict()
    assert own.keys() == theirs.keys()
    assert [k for k in own if not (own[k].shape == theirs[k].shape and torch.equal(own[k], theirs[k]))] == [
        "classifier.1.weight",
        "classifier.1.bias",
    ]


def test_frozen_batchnorm_statistics_stay_fixed(shapes, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "vgg16bn.pth"
    torch.save(models.build("vgg-d", num_classes=1000, **{**SMALL_VGG16, "batch_norm": True}).state_dict(), weights)
    engine = Engine(transfer_config(shapes, weights, batch_norm=True, freeze=13))
    engine.train_epoch(1, [])
    after, theirs = engine.model.state_dict(), torch.load(weights, weights_only=True)
    assert all(torch.equal(after[k], theirs[k]) for k in theirs if k.startswith("features."))


# --- bad input: one line, exit 2 ----------------------------------------------------------------


@pytest.fixture
def bad_files(trained_run, tmp_path) -> dict[str, Path]:
    ck = trained_run["checkpoint"]
    (tmp_path / "notes.png").write_text("not an image")
    torch.save(torchvision.models.mobilenet_v2(width_mult=0.25).state_dict(), tmp_path / "foreign.pt")
    (tmp_path / "corrupt.pt").write_bytes(ck.read_bytes()[:2000])
    # A checkpoint whose config names another architecture than its weights (vgg-b's 10 convs).
    payload = checkpoint.load(ck)
    other = RunConfig.from_dict({**payload["config"], "model": "vgg-b"})
    checkpoint.save(tmp_path / "other.pt", {**payload, "config": other.to_dict(), "config_hash": other.hash})
    wide = tmp_path / "wide.pth"  # VGG-16 at width 1/8: every conv twice as wide as the model's
    torch.save(models.build("vgg-d", num_classes=1000, **{**SMALL_VGG16, "width": 0.125}).state_dict(), wide)
    return {
        name: tmp_path / f
        for name, f in (
            ("image", "notes.png"),
            ("foreign", "foreign.pt"),
            ("corrupt", "corrupt.pt"),
            ("other", "other.pt"),
            ("wide", "wide.pth"),
        )
    }


def test_bad_input_through_each_command_line_is_one_line_and_exit_2(trained_run, shapes, bad_files, tmp_path):
    ck = str(trained_run["checkpoint"])
    cases = {
        "not an image": (["bench.predict", "--checkpoint", ck, str(bad_files["image"])], "is not an image"),
        "prune amount 0": (["bench.post", "--checkpoint", ck, "--prune", "0"], "outside (0, 1)"),
        "pretrained that does not fit": (
            [
                "bench.train",
                "--model",
                "vgg-d",
                "--head",
                "paper",
                "--width",
                "0.0625",
                "--image-size",
                "32",
                "--dataset",
                f"imagefolder:{shapes}",
                "--pretrained",
                str(bad_files["wide"]),
                "--epochs",
                "1",
                "--device",
                "cpu",
            ],
            "does not fit this architecture: features.0.weight is (8, 3, 3, 3) there, (4, 3, 3, 3) here",
        ),
    }
    # Started together: each pays Python's and torch's start-up, and they overlap on the cores.
    started = {
        name: subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (argv, _) in cases.items()
    }
    for name, process in started.items():
        _, stderr = process.communicate(timeout=300)
        assert cases[name][1] in error_line(process.returncode, stderr), name


@pytest.mark.parametrize(
    "command, argv, message",
    [
        (
            predict,
            ["--checkpoint", "{foreign}", "--grid", "4"],
            "is not a vgg-bench checkpoint (no 'vgg-bench/1' marker)",
        ),
        (post, ["--checkpoint", "{corrupt}", "--quantize"], "corrupt, truncated or foreign"),
        (post, ["--checkpoint", "{other}", "--onnx"], "does not fit this architecture"),
        (predict, ["--run", "0123456789abcdef", "--tracking-uri", "{uri}", "--grid", "4"], "no MLflow run"),
        (post, ["--checkpoint", "{checkpoint}", "--prune", "0.3,1.5"], "prune amount 1.5 is outside (0, 1)"),
        (post, ["--checkpoint", "{checkpoint}", "--prune", "0.3,x"], "--prune takes fractions"),
        (predict, ["--checkpoint", "{checkpoint}"], "nothing to do"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(command, argv, message, trained_run, bad_files, capsys):
    """The same path as `python -m` (bench.errors.cli around main), in-process to save start-ups."""
    values = {**bad_files, "uri": trained_run["uri"], "checkpoint": trained_run["checkpoint"]}
    assert message in main_error(command.main, [arg.format(**values) for arg in argv], capsys)
