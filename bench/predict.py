"""python -m bench.predict: what a trained model says about your images, and where it goes wrong.

    python -m bench.predict --run RUN_ID shirt.png boot.jpg     # class and confidence per image
    python -m bench.predict --checkpoint best.pt --grid 16      # test images, true vs predicted (PNG)
    python -m bench.predict --run RUN_ID --confusion            # confusion matrix, per-class accuracy
    python -m bench.predict --model models:/depth-cpu@best shirt.png   # a study's registered best model

PNG files go to reports/ (git-ignored) unless --out-dir says otherwise; tables go to stdout.
The model comes from a finished run's `checkpoints/best.pt` artifact (of the run a registered
model version was logged by, for --model) or from a checkpoint file;
its RunConfig (inside the checkpoint) rebuilds the architecture and reloads the dataset with the
same subset and split seed, so the normalisation statistics and class names are the training run's
own. Everything runs on the CPU.

How a user's image becomes model input, so that it goes through the training images' own path
(bench.data.preprocessing, the same code as the run's logged pyfunc model):
- colour: converted to greyscale ("L") for a 1-channel model, to RGB for a 3-channel one (alpha
  dropped), as bench.data decodes image folders;
- geometry: for imagefolder and synthetic models, the shorter side is resized to the model's image
  size and the centre cropped (bench.data's own decoder). For the file datasets (Fashion-MNIST,
  MNIST, CIFAR) the image is first brought to the dataset's native size the same way (28 px / 32 px)
  and then given the run's treatment of native images: the zero-padding 28 -> 32, or the resize to
  `image_size`. So a dataset image saved as a PNG comes back as exactly its training tensor (tested).
  A run under the paper's scale protocol (train_scale) takes the view its test images had: the
  shorter side rescaled to its (first) test scale Q, the centre crop;
- values: normalised with the training split's per-channel mean and std (tested equal to
  bench.data's batching);
- background: Fashion-MNIST and MNIST are light objects on a black background. An image whose
  border is light (a photo of a dark garment on a white table) is inverted first, and the table
  says so; --no-auto-invert turns that off, --invert inverts every image.
What no pipeline can do for you: crop a photo to the object, centred and filling the frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import torch
from rich.markup import escape
from rich.table import Table

from bench import data, out_folder
from bench.data.images import decode_bytes, file_bytes
from bench.data.preprocessing import Preprocessing
from bench.engine import plots
from bench.engine.train import EVAL_BATCH
from bench.errors import BenchError, Parser, cli, one_line, redact
from bench.progress import console, out
from bench.run.trained import Trained, load_trained, normalise, test_predictions, tracker_for

OUT_DIR = "reports"  # git-ignored, under the working directory


# --- from image files to model input ----------------------------------------------------------


def preprocess(trained: Trained, path: str | Path, invert: str = "auto") -> torch.Tensor:
    """One image file as the model's normalised float input [C, H, W] (see the module docstring)."""
    images, _ = prepare(trained, [path], invert)
    return trained.servable.preprocessing.normalise(images)[0]


def prepare(trained: Trained, paths: list[str | Path], invert: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images at the model's size, which were inverted) for image files, through
    bench.data.preprocessing: the logged model's own."""
    preprocessing = trained.servable.preprocessing
    mode = "L" if preprocessing.in_channels == 1 else "RGB"
    # Files are decoded by bench.data's own decoder at the dataset's native size (imagefolder:
    # the model's size), as its images were; the run's padding or resize comes after, in Preprocessing.
    decoded = [read_image(Path(path), mode, preprocessing) for path in paths]
    return preprocessing.prepare(torch.stack(decoded).numpy(), invert)


def read_image(path: Path, mode: str, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 [C, H, W] at the native size (under the scale protocol: the run's test view), or one line
    saying why the file is not an image."""
    from PIL import Image

    if not path.is_file():
        raise BenchError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            image.verify()  # header and structure: a text file or a truncated PNG stops here
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds; all mean "not an image"
        raise BenchError(
            f"{path} is not an image that PIL can read ({one_line(exc, 120)}); give a PNG, JPEG, BMP, GIF or TIFF file"
        ) from None
    if preprocessing.test_scale is not None:
        return preprocessing.test_view(decode_bytes(file_bytes(path), mode, path))
    return data.decode_image(path, mode, preprocessing.native_size)


@torch.inference_mode()
def probabilities(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(x).float().softmax(1) for x in inputs.split(EVAL_BATCH)])


# --- pictures and tables ------------------------------------------------------------------------


def prediction_grid(trained: Trained, count: int, path: Path) -> Path:
    """The tutorials' figure: the first `count` test images, predicted class over the true one."""
    import matplotlib.pyplot as plt  # bench.engine.plots has chosen the Agg backend

    splits = trained.splits
    views, labels = splits.examples(count), splits.labels("test")[:count]
    probs = probabilities(trained.model, normalise(splits, views))
    confidence, predicted = probs.max(1)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label, guess, p in zip(axes.flat, views, labels, predicted, confidence):
        pixels = image.permute(1, 2, 0).numpy()
        ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=255)
        right = bool(guess == label)
        ax.set_title(
            f"{splits.classes[guess]} {p:.0%}\ntrue: {splits.classes[label]}",
            fontsize=8,
            color="green" if right else "red",
        )
    correct = int((predicted == labels).sum())
    fig.suptitle(f"{trained.source}: {correct}/{count} right (predicted, confidence / true class)", fontsize=9)
    fig.tight_layout()
    return plots.save_figure(fig, path)


def per_class_table(trained: Trained, predictions: torch.Tensor) -> Table:
    labels = trained.splits.labels("test")
    table = Table(title=escape(f"{trained.source}: test accuracy per class"))
    for column in ("class", "images", "correct", "accuracy", "most confused with"):
        table.add_column(column, justify="left" if column in ("class", "most confused with") else "right")
    classes = trained.splits.classes
    counts = plots.confusion_counts(labels, predictions, len(classes))
    for k, name in enumerate(classes):
        row = counts[k].copy()
        total, right = int(row.sum()), int(row[k])
        row[k] = -1
        confused = f"{classes[int(row.argmax())]} ({int(row.max())})" if total > right else "-"
        table.add_row(escape(name), str(total), str(right), f"{right / max(total, 1):.4f}", escape(confused))
    overall = float((predictions == labels).float().mean())
    table.add_row(
        "[bold]all[/]", str(len(labels)), str(int((predictions == labels).sum())), f"[bold]{overall:.4f}[/]", ""
    )
    return table


def image_table(trained: Trained, paths: list[str], probs: torch.Tensor, inverted: torch.Tensor) -> Table:
    classes = trained.splits.classes
    table = Table(title=escape(f"{trained.source} ({trained.config.model}, {trained.config.dataset})"))
    table.add_column("image", overflow="fold")  # a long path wraps whole rather than losing its name
    for column in ("class", "confidence", "runner-up", "inverted"):
        table.add_column(column, justify="right" if column == "confidence" else "left")
    top = probs.topk(min(2, probs.shape[1]), dim=1)
    for path, values, indices, flipped in zip(paths, top.values, top.indices, inverted.tolist()):
        runner_up = f"{classes[indices[1]]} ({values[1]:.1%})" if len(indices) > 1 else ""
        table.add_row(
            escape(str(path)),
            escape(classes[indices[0]]),
            f"{values[0]:.1%}",
            escape(runner_up),
            "yes" if flipped else "",
        )
    return table


# --- command line -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m bench.predict", description="Predict images with a trained model; show its test predictions."
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files to classify")
    p.add_argument("--run", help="a finished MLflow run id (its checkpoints/best.pt is used)")
    p.add_argument(
        "--model",
        metavar="URI",
        help="a registered model: models:/NAME@ALIAS (e.g. models:/depth-cpu@best) or models:/NAME/VERSION",
    )
    p.add_argument("--checkpoint", help="a checkpoint file written by bench.train (best.pt / last.pt)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--data-dir", help="where the model's dataset files are (default: $BENCH_DATA, system, download)")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--invert", action="store_true", help="invert every image's pixel values first")
    flip.add_argument(
        "--no-auto-invert",
        action="store_true",
        help="never invert; by default a light-background image is inverted for a model trained on "
        "light-on-dark images (Fashion-MNIST, MNIST), and the table says so",
    )
    p.add_argument("--grid", type=int, metavar="N", help="save a grid of the first N test images, true vs predicted")
    p.add_argument("--confusion", action="store_true", help="confusion matrix and per-class accuracy on the test set")
    p.add_argument("--out-dir", default=OUT_DIR, help=f"where the PNG files go (default: {OUT_DIR}/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not (args.images or args.grid or args.confusion):
        raise BenchError("nothing to do: give IMAGE files, --grid N or --confusion")
    if args.grid is not None and args.grid < 1:
        raise BenchError(f"--grid takes a positive number of test images, got {args.grid}")
    if sum(x is not None for x in (args.run, args.model, args.checkpoint)) > 1:
        raise BenchError("say which model once: --run RUN_ID, --model models:/NAME@ALIAS or --checkpoint PATH")
    out_dir = out_folder.check(args.out_dir, "--out-dir")
    run_id = args.run
    tracker = tracker_for(args.run or args.model, args.tracking_uri)
    if args.model is not None:
        run_id = tracker.resolve_model(args.model)
    trained = load_trained(run_id=run_id, checkpoint_path=args.checkpoint, tracker=tracker, data_dir=args.data_dir)
    if args.model is not None:
        trained = dataclasses.replace(trained, source=f"{args.model} (run {run_id})")
    written = []

    if args.images:
        invert = "yes" if args.invert else "no" if args.no_auto_invert else "auto"
        images, inverted = prepare(trained, args.images, invert)
        out.print(image_table(trained, args.images, trained.servable.probabilities(images), inverted))
        if invert == "auto" and inverted.any():
            console.print(
                f"note: {int(inverted.sum())} image(s) with a light background were inverted, as the model "
                "was trained on light objects on a dark background; --no-auto-invert turns that off"
            )
    if args.grid:
        count = min(args.grid, len(trained.splits.labels("test")))
        written.append(prediction_grid(trained, count, out_dir / f"predictions-{trained.tag}.png"))
    if args.confusion:
        predictions = test_predictions(trained.model, trained.splits)
        out.print(per_class_table(trained, predictions))
        written.append(
            plots.confusion_matrix(
                trained.splits.labels("test").tolist(),
                predictions.tolist(),
                trained.splits.classes,
                out_dir / f"confusion-{trained.tag}.png",
                f"{trained.source}: test set",
            )
        )
    for path in written:
        console.print(f"wrote {path}")
    if tracker is not None and written:
        behind = f" (the run behind {args.model})" if args.model else ""
        names = ", ".join(p.name for p in written)
        console.print(
            f"note: adding {names} under predict/ to recorded MLflow run {trained.run_id}"
            f"{escape(behind)} in {escape(redact(tracker.uri))}",
            soft_wrap=True,
        )
        for path in written:
            tracker.log_file(trained.run_id, path, "predict")
    return 0


if __name__ == "__main__":
    cli(main)
