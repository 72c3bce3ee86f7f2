"""bench.predict and the served model on a run under the paper's scale protocol: an image goes in as the
run's test images did (shorter side rescaled to the test scale Q, the centre crop), not just centre-cropped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import data, predict
from bench.config import RunConfig
from bench.data import images
from bench.data.generate import make_tree
from bench.data.preprocessing import Preprocessing
from bench.engine.train import fit
from bench.post import command as post
from bench.post import compress

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scale-predict")
    tree = make_tree(folder / "tree", images=90, classes=3, size=(60, 48), workers=1)
    # S = Q = 384 at a 32 px crop: the test images' shorter side is 55 px before their centre crop.
    config = RunConfig(
        dataset=f"imagefolder:{tree}",
        image_size=32,
        train_scale="384",
        model="vgg-a",
        width=0.0625,
        epochs=1,
        batch_size=16,
        lr=0.01,
        loader_workers=0,
        device="cpu",
    )
    result = fit(config, checkpoint_dir=folder / "ck")
    return config, result, folder / "ck" / "best.pt"


def test_predict_takes_the_runs_test_view_at_q(trained_run):
    config, result, best = trained_run
    trained = predict.load_trained(checkpoint_path=best)
    preprocessing = trained.servable.preprocessing
    assert (preprocessing.test_scale, preprocessing.image_size) == (55, 32)
    splits = data.open_run(config)
    files = splits.parts["test"].files
    x, _ = next(splits.batches("test", len(files)))
    assert (preprocessing.mean, preprocessing.std) == (splits.mean, splits.std)  # the run's own statistics
    mine = torch.stack([predict.preprocess(trained, f) for f in files])
    torch.testing.assert_close(mine, x, rtol=0, atol=1e-6)
    # A plain centre crop (what predict did before) is another input.
    crop = preprocessing.normalise(data.decode_image(files[0], "RGB", 32)[None])[0]
    assert (crop - mine[0]).abs().max() > 0.1
    # So the command line predicts every test image as the run did.
    probs = trained.servable.probabilities(
        torch.stack([predict.read_image(Path(f), "RGB", preprocessing) for f in files])
    )
    assert probs.argmax(1).tolist() == result.predictions


def test_served_arrays_of_any_size_get_the_same_view(trained_run):
    _, _, best = trained_run
    trained = predict.load_trained(checkpoint_path=best)
    preprocessing = Preprocessing.from_json(trained.servable.preprocessing.to_json())  # as logged
    path = trained.splits.parts["test"].files[0]
    whole = images.decode_bytes(images.file_bytes(path), "RGB", path)
    served, _ = preprocessing.prepare(whole.permute(1, 2, 0).numpy(), invert="no")
    assert torch.equal(served[0], predict.read_image(Path(path), "RGB", preprocessing))
    old = Preprocessing.from_json({k: v for k, v in preprocessing.to_json().items() if k != "test_scale"})
    assert old.test_scale is None  # a model logged before the setting keeps its centre crop


def test_grid_confusion_and_post_run_on_the_streamed_splits(trained_run, tmp_path):
    config, result, best = trained_run
    assert predict.main(["--checkpoint", str(best), "--grid", "4", "--confusion", "--out-dir", str(tmp_path)]) == 0
    assert {p.name.split("-")[0] for p in tmp_path.glob("*.png")} == {"predictions", "confusion"}
    trained = predict.load_trained(checkpoint_path=best)
    assert compress.accuracy(trained.model, trained) == pytest.approx(result.test_acc)
    assert (
        post.main(["--checkpoint", str(best), "--quantize", "--repeats", "2", "--out-dir", str(tmp_path / "post")]) == 0
    )
