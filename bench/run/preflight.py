"""What a study's runs need, checked before the first run is recorded.

A study that would fail inside its first run (a dataset that is not there, a batch larger than
the training split, a checkpoint folder it cannot write, a pretrained file that is corrupt or of
another architecture) fails here instead, in one line, with no MLflow run and no Optuna trial
left behind.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench import data
from bench.config import RunConfig
from bench.engine import step
from bench.engine.train import build_model
from bench.errors import BenchError


def check(configs: list[RunConfig], *, data_dir: str | None, checkpoint_root: Path) -> None:
    loaded: dict[tuple, data.RunData] = {}
    built: set[tuple] = set()
    for config in configs:
        step.check(config)  # a graph step asked for without CUDA
        key = config.data_settings
        if key not in loaded:  # each dataset and split once, however many runs share it
            loaded[key] = data.open_run(config.replace(loader_workers=0), data_dir=data_dir)
        splits = loaded[key]
        # The model first: a pretrained file that does not fit is the first thing a user must fix.
        model_key = (config.model, tuple(sorted(config.model_options.items())), key, config.pretrained, config.freeze)
        if (config.pretrained is not None or config.freeze) and model_key not in built:
            build_model(config, splits)  # reads the pretrained file and checks that it fits, and freeze
            built.add(model_key)

        if splits.num_batches("train", config.batch_size, drop_last=True) == 0:
            train_size = len(splits.labels("train"))
            raise BenchError(
                f"batch size {config.batch_size} is larger than the training split of {config.dataset} "
                f"({train_size} images with subset {config.subset or 'all'} and val_fraction {config.val_fraction}): "
                f"lower --batch-size to at most {train_size}, or raise --subset"
            )

    # Last: it makes the folder, which a refused setting or data must not leave behind.
    check_writable(checkpoint_root)


def check_writable(folder: Path) -> None:
    """The checkpoint folder must take a file, or every run would fail at its first epoch."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise BenchError(
            f"--checkpoint-root {folder} is not a writable folder ({exc.strerror or exc}): give one you can write to"
        ) from None
