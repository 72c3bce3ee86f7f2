"""A finished run's model, reloaded with its data: what bench.predict and bench.post start from.

The model comes from a run's `checkpoints/best.pt` artifact or from a checkpoint file; its RunConfig
(inside the checkpoint) rebuilds the architecture and reloads the dataset with the same subset and
split seed, so the normalisation statistics and class names are the training run's own. Everything
runs on the CPU.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import data
from bench.config import RunConfig
from bench.data.preprocessing import Preprocessing
from bench.data.splits import Normaliser
from bench.engine import checkpoint, record, serving
from bench.engine.train import EVAL_BATCH, build_model
from bench.errors import BenchError
from bench.progress import make_progress


@dataclass
class Trained:
    """A trained model ready for inference, with the data it was trained on."""

    config: RunConfig
    model: torch.nn.Module  # on the CPU, in eval mode
    splits: data.RunData  # reloaded as in training: same subset, split seed, mean and std
    source: str  # "run <id>" or the checkpoint's path, for messages and titles
    run_id: str | None  # the MLflow run, when the model came from one

    @property
    def servable(self) -> serving.Servable:
        """The model with the preprocessing its logged pyfunc model carries."""
        return serving.Servable(self.model, Preprocessing.from_splits(self.splits), self.config)

    @property
    def tag(self) -> str:
        """A short name for files derived from this model."""
        return f"run-{self.run_id[:8]}" if self.run_id else f"ckpt-{self.config.hash}"


def load_trained(
    *, run_id: str | None = None, checkpoint_path: str | Path | None = None, tracker=None, data_dir: str | None = None
) -> Trained:
    """The model of a finished run (its best checkpoint) or of a checkpoint file."""
    if (run_id is None) == (checkpoint_path is None):
        raise BenchError("say which model: --run RUN_ID (a finished MLflow run) or --checkpoint PATH")
    if run_id is not None:
        tracker = tracker or tracker_for(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            path = tracker.download_artifact(run_id, record.BEST_CHECKPOINT, tmp)
            payload = checkpoint.load(path)
        source = f"run {run_id}"
    else:
        payload = checkpoint.load(checkpoint_path)
        source = str(checkpoint_path)
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("model"), dict):
        raise BenchError(
            f"{source}: the checkpoint holds no run config or no model weights; "
            "give the best.pt or last.pt a training run wrote"
        )
    try:
        config = RunConfig.from_dict(payload["config"])
    except BenchError as exc:
        raise BenchError(f"{source}: its run config does not load here ({exc})") from None
    if config.train_scale is not None:  # the scale protocol's own splits: its statistics and test scale Q;
        # streamed, as only the normalisation sample and the images asked for need decoding
        splits = data.open_run(config.replace(data_holder="stream"), data_dir=data_dir, device="cpu")
    else:
        splits = data.load(
            config.dataset,
            data_dir=data_dir,
            image_size=config.image_size,
            subset=config.subset,
            val_fraction=config.val_fraction,
            split_seed=config.split_seed,
            device="cpu",
        )
    # The weights come from the checkpoint: neither the pretrained file nor freezing matters now,
    # and the pretrained file need not exist any more.
    model = build_model(config.replace(pretrained=None, freeze=0), splits)
    checkpoint.load_weights(model, payload["model"], f"checkpoint of {source}")
    return Trained(config, model.eval(), splits, source, run_id)


def tracker_for(run_id: str | None, uri: str | None = None):
    """The MLflow gateway when a run is named, else None: MLflow is imported only when needed.
    The store must exist: asking a path that holds none must not create an empty one."""
    if run_id is None:
        return None
    from bench.tracking import open_existing

    return open_existing(uri)


def normalise(splits: data.RunData, images: torch.Tensor) -> torch.Tensor:
    """Float input from uint8 images [N, C, H, W], with the normaliser that fed training (either splits')."""
    return Normaliser(splits.mean, splits.std, images.device)(images)


@torch.inference_mode()
def test_predictions(forward, splits: data.RunData, show_progress: bool = True) -> torch.Tensor:
    """The predicted class of every test image, in order. `forward` maps a float batch to logits
    (a model, or bench.post's onnxruntime session wrapper, whose numpy output is converted)."""
    predictions = []
    with make_progress() as bar:
        bar.disable = not show_progress  # bench.post shows its own bar; rich allows one at a time
        task = bar.add_task("test set", total=splits.num_batches("test", EVAL_BATCH), info="")
        for x, _ in splits.batches("test", EVAL_BATCH):
            predictions.append(torch.as_tensor(forward(x)).argmax(1))
            bar.advance(task)
    return torch.cat(predictions)
