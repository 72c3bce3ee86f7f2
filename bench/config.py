"""RunConfig: every setting a training run depends on, and nothing else.

A run *is* its config: the hash of a RunConfig names the run, so a study run again can find
what already finished and resume what was cut off. Where data lives (`data_dir`) or where
checkpoints go is not part of it, because moving files does not change the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, fields
from typing import Any, get_args, get_type_hints

from bench.errors import BenchError, choices

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "plateau")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPUTES = ("epochs", "flops")
LATER_SETTINGS = {"world_size", "sync_batch_norm", "compute", "compute_scale"}  # see RunConfig.hash


@dataclass(frozen=True)
class RunConfig:
    # --- model: passed to bench.models.build (the baselines take only width; they always have BN) ---
    model: str = "vgg-a"
    batch_norm: bool = False  # the paper had none; BN on/off is the modern ablation
    head: str = "small"  # 'small' suits 32 px inputs (the 1x1 final map); 'paper' is FC-4096 x2
    width: float = 1.0  # channel multiplier: narrow nets make CPU runs affordable
    init: str = "kaiming"  # 'paper' N(0, 0.01) stalls deep nets without BN, as the paper found
    dropout: float = 0.5  # on the hidden FC layers of the paper/light heads
    # --- data ---
    dataset: str = "fashion-mnist"
    image_size: int | None = None  # None: the dataset's own (28 px sets are padded to 32)
    subset: int | None = None  # keep this many training images: the CPU budgets' main lever
    val_fraction: float = 0.1  # held out from training for model selection and pruning
    split_seed: int = 0  # fixes the train/val split separately from the training seed
    augment: bool = True  # random crop (pad 4) + horizontal flip on whole batches
    # --- optimisation ---
    seed: int = 0  # weights, batch order, augmentation, dropout
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # SGD momentum; Adam's beta1 stays at its default
    nesterov: bool = False
    weight_decay: float = 5e-4  # the paper's value
    schedule: str = "cosine"  # 'plateau' is the paper's: divide by 10 when val accuracy stalls
    warmup_epochs: float = 0.0  # linear ramp from lr/10; lets no-BN nets start without diverging
    step_epochs: int = 30  # 'step' schedule: divide lr by 10 every this many epochs
    patience: int = 2  # 'plateau' schedule: epochs without val improvement before a drop
    label_smoothing: float = 0.0
    # --- compute: how long each variant trains ---
    # 'epochs': every variant trains `epochs`. 'flops': every variant trains the training FLOPs of the
    # study's reference variant in `epochs`: its step count (and schedule) is epochs x steps per epoch x
    # compute_scale, where the study sets compute_scale = reference FLOPs per image / this model's.
    compute: str = "epochs"
    compute_scale: float = 1.0
    # --- transfer learning ---
    pretrained: str | None = None  # a local torchvision state_dict file; its last layer is replaced
    freeze: int = 0  # keep the first N conv layers (and their BN) fixed at the pretrained values
    backbone_lr_scale: float = 1.0  # lr multiplier for everything but the new last layer
    # --- execution: these change speed, and in the case of precision the numbers too ---
    precision: str = "auto"  # auto: bf16 autocast on GPUs that support it, fp32 on CPU
    channels_last: bool = True  # +20 % on this project's CPUs, more on tensor-core GPUs
    compile: bool = False  # torch.compile pays ~1 min up front; worth it for long runs
    device: str = "auto"  # auto: cuda if available, else cpu
    # --- several processes per run (torchrun): a different world size may give different numbers ---
    world_size: int = 1  # processes that share each global batch; set by torchrun / --gpus-per-run
    sync_batch_norm: bool = False  # BatchNorm statistics over the whole global batch (GPUs only)
    # --- bookkeeping: runs of different budgets must never be mixed in a report ---
    budget: str = "custom"

    def __post_init__(self) -> None:
        from bench import models  # the registry validates model options in full at build time

        if self.model not in models.names():
            choices("model", self.model, models.names())
        if self.optimizer not in OPTIMIZERS:
            choices("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            choices("schedule", self.schedule, SCHEDULES)
        if self.precision not in PRECISIONS:
            choices("precision", self.precision, PRECISIONS)
        for f in fields(self):  # NaN slips through every comparison below, and inf is no setting
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise BenchError(f"setting {f.name!r} = {value!r} is not a finite number: give a real value")
        # epochs first: the warm-up range below is measured in epochs
        for name in ("epochs", "batch_size", "step_epochs", "patience", "world_size"):
            _check_range(name, getattr(self, name), 1, None)
        if self.compute not in COMPUTES:
            choices("compute", self.compute, COMPUTES)
        _check_range("compute_scale", self.compute_scale, 0, 1000, low_open=True)
        if self.compute == "epochs" and self.compute_scale != 1.0:
            raise BenchError(f"setting 'compute_scale' = {self.compute_scale!r} needs compute = 'flops' (a study "
                             "with compute = 'flops' sets it from the models' FLOPs; with 'epochs' it stays 1)")
        _check_range("width", self.width, 0, 4, low_open=True)
        _check_range("dropout", self.dropout, 0, 1, high_open=True)
        _check_range("val_fraction", self.val_fraction, 0, 1, low_open=True, high_open=True)
        _check_range("lr", self.lr, 0, 10, low_open=True)
        _check_range("momentum", self.momentum, 0, 1, high_open=True)
        _check_range("weight_decay", self.weight_decay, 0, 1)
        _check_range("label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        _check_range("warmup_epochs", self.warmup_epochs, 0, self.epochs)
        _check_range("backbone_lr_scale", self.backbone_lr_scale, 0, 10)
        _check_range("freeze", self.freeze, 0, None)
        if self.batch_size % self.world_size:
            raise BenchError(f"batch size {self.batch_size} is not a multiple of the world size "
                             f"{self.world_size}: choose a batch size divisible by {self.world_size}")
        if self.subset is not None:
            _check_range("subset", self.subset, 1, None)
        if self.image_size is not None:
            _check_range("image_size", self.image_size, 8, 1024)
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda", "mps")):
            raise BenchError(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N, mps")

    @property
    def model_options(self) -> dict[str, Any]:
        """The options bench.models.build takes for this model (the baselines: only width)."""
        if not self.model.startswith("vgg"):
            return {"width": self.width}
        options = dict(batch_norm=self.batch_norm, head=self.head, width=self.width, init=self.init)
        if self.head in ("paper", "light"):  # the heads with hidden layers to drop out of
            options["dropout"] = self.dropout
        return options

    @property
    def train_epochs(self) -> float:
        """Epochs of training: `epochs`, scaled under equal compute (the last one may be partial)."""
        return self.epochs * self.compute_scale

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run, which the learning-rate schedule spans."""
        return max(1, round(self.train_epochs * steps_per_epoch))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> str:
        """A stable 12-hex-digit identity: same settings, same hash, on any machine.

        A setting added after runs were first recorded counts only when it is not at its default,
        so the runs recorded before it existed keep their identity (a rerun still skips them).
        """
        defaults = {f.name: f.default for f in fields(self)}
        values = {k: v for k, v in self.to_dict().items() if k not in LATER_SETTINGS or v != defaults[k]}
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @classmethod
    def typed(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Loosely typed settings (TOML, CLI, MLflow params) converted to the fields' types."""
        hints = get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise BenchError(
                f"unknown setting {sorted(unknown)[0]!r}; valid settings: {', '.join(sorted(known))}"
            )
        return {k: coerce(k, v, hints[k]) for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        return cls(**cls.typed(values))

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **changes})


def coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert `value` to the field's type, or explain in one line why it cannot be."""
    optional = type(None) in get_args(hint)
    base = next((a for a in get_args(hint) if a is not type(None)), hint).__name__
    if value is None or (optional and value in ("", "none", "None")):
        if optional:
            return None
        raise BenchError(f"setting {name!r} needs a value of type {base}")
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise BenchError(f"setting {name!r} must be {base}, got {value!r}") from None


def _check_range(name, value, low, high, *, low_open=False, high_open=False) -> None:
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ("inf)" if high is None else f"{high})" if high_open else f"{high}]")
        raise BenchError(f"setting {name!r} = {value!r} is out of range {left}{low}, {right}")
