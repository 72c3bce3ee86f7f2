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
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_type_hints

from bench.errors import BenchError, choices
from bench.models import options as model_options
from bench.ranges import DROPOUT, IMAGE_SIZE, WIDTH, Interval

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "plateau")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPUTES = ("epochs", "flops")
EVAL_MODES = ("centre", "dense", "multi-crop", "dense+multi-crop")
DATA_HOLDERS = ("auto", "memory", "stream", "stream-gpu")
STEPS = ("auto", "eager", "graph")  # bench.engine.step
IMAGE_FOLDERS = ("imagefolder:", "synthetic-images")  # the datasets the paper's scale protocol applies to
PAPER_CROP = 224  # scales are given at the paper's crop
MAX_SCALE = 2048


def setting(default: Any, *, later: bool = False, data: bool = False, report: bool = False) -> Any:
    """A RunConfig field whose role other code reads from the field itself, not from a list to keep in step:
    `later`: added after runs were recorded, so it counts in the hash only off its default (RunConfig.hash);
    `data`: it decides which images a run trains and is tested on (RunConfig.data_settings);
    `report`: the report reads it back from each run's params (bench.report.read)."""
    return field(default=default, metadata={"later": later, "data": data, "report": report})


@dataclass(frozen=True)
class RunConfig:
    # --- model: passed to bench.models.build (the baselines take only width; they always have BN) ---
    model: str = "vgg-a"
    batch_norm: bool = setting(False, report=True)  # the paper had none; BN on/off is the modern ablation
    head: str = "small"  # 'small' suits 32 px inputs (the 1x1 final map); 'paper' is FC-4096 x2
    width: float = 1.0  # channel multiplier: narrow nets make CPU runs affordable
    init: str = "kaiming"  # 'paper' N(0, 0.01) stalls deep nets without BN, as the paper found
    dropout: float = 0.5  # on the hidden FC layers of the paper/light heads
    # --- data ---
    dataset: str = setting("fashion-mnist", data=True)
    image_size: int | None = setting(None, data=True)  # None: the dataset's own (28 px sets are padded to 32)
    subset: int | None = setting(None, data=True)  # keep this many training images: the CPU budgets' lever
    val_fraction: float = setting(0.1, data=True)  # held out from training for model selection and pruning
    split_seed: int = setting(0, data=True)  # fixes the train/val split separately from the training seed
    augment: bool = True  # random crop (pad 4) + horizontal flip on whole batches
    # --- the paper's scale protocol (image folders); scales are given for the paper's 224 crop and
    # applied in proportion to image_size, so one study file serves a 32 px CPU run and a 224 px GPU run ---
    # S: '256' fixed or '256,512' drawn per image (jittering); None: pad-4 crops
    train_scale: str | None = setting(None, later=True, data=True, report=True)
    # Q: '256' or '224,256,288'; None: S, or (S_min + S_max) / 2 when jittered
    test_scales: str | None = setting(None, later=True, data=True)
    # final test: any of centre, dense, multi-crop, dense+multi-crop (comma list). Every model takes every
    # mode: multi-crop feeds crop-sized views, which any head takes; dense turns a VGG's classifier (any of its
    # heads) into convolutions, and the baselines, which end in global average pooling and a linear layer,
    # are already dense (bench.models.dense), so there is no model whose head cannot go dense to refuse.
    eval_modes: str = setting("centre", later=True)
    # image folders: memory (decoded once), stream (decoded per batch in the workers), stream-gpu (the workers
    # read file bytes, JPEGs are decoded a batch at a time on the GPU), auto: memory or stream by size
    data_holder: str = setting("auto", later=True, data=True)
    loader_workers: int = setting(2, later=True)  # worker processes decoding an image folder's batches
    # --- optimisation ---
    seed: int = 0  # weights, batch order, augmentation, dropout
    epochs: int = setting(10, report=True)
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
    compute: str = setting("epochs", later=True, report=True)
    compute_scale: float = setting(1.0, later=True, report=True)
    # --- transfer learning ---
    pretrained: str | None = None  # a local torchvision state_dict file; its last layer is replaced
    freeze: int = 0  # keep the first N conv layers (and their BN) fixed at the pretrained values
    # the paper's 3.1: start B..E from a trained A of the same study and seed
    init_from_a: bool = setting(False, later=True)
    backbone_lr_scale: float = 1.0  # lr multiplier for everything but the new last layer
    # --- execution: these change speed, and in the case of precision the numbers too ---
    precision: str = "auto"  # auto: bf16 autocast on GPUs that support it, fp32 on CPU
    channels_last: bool = True  # +20 % on this project's CPUs, more on tensor-core GPUs
    compile: bool = False  # torch.compile pays ~1 min up front; worth it for long runs
    device: str = "auto"  # auto: cuda if available, else cpu
    # the training step: graph (captured as a CUDA graph: no launch overhead), eager, or auto: the graph
    # on CUDA when the run can be captured, else eager; both give the same numbers (bench.engine.step)
    step: str = setting("auto", later=True)
    # --- several processes per run (torchrun): a different world size may give different numbers ---
    world_size: int = setting(1, later=True)  # processes sharing each global batch (torchrun, --gpus-per-run)
    sync_batch_norm: bool = setting(False, later=True)  # BatchNorm statistics over the whole global batch (GPUs)
    # --- bookkeeping: runs of different budgets must never be mixed in a report ---
    budget: str = "custom"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            choices("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            choices("schedule", self.schedule, SCHEDULES)
        if self.precision not in PRECISIONS:
            choices("precision", self.precision, PRECISIONS)
        if self.step not in STEPS:
            choices("step", self.step, STEPS)
        for f in fields(self):  # NaN slips through every comparison below, and inf is no setting
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise BenchError(f"setting {f.name!r} = {value!r} is not a finite number: give a real value")
        # epochs first: the warm-up range below is measured in epochs
        for name in ("epochs", "batch_size", "step_epochs", "patience", "world_size"):
            _check_range(name, getattr(self, name), Interval(1))
        if self.compute not in COMPUTES:
            choices("compute", self.compute, COMPUTES)
        _check_range("compute_scale", self.compute_scale, Interval(0, 1000, low_open=True))
        if self.compute == "epochs" and self.compute_scale != 1.0:
            raise BenchError(
                f"setting 'compute_scale' = {self.compute_scale!r} needs compute = 'flops' (a study "
                "with compute = 'flops' sets it from the models' FLOPs; with 'epochs' it stays 1)"
            )
        _check_range("width", self.width, WIDTH)
        _check_range("dropout", self.dropout, DROPOUT)
        _check_range("val_fraction", self.val_fraction, Interval(0, 1, low_open=True, high_open=True))
        _check_range("lr", self.lr, Interval(0, 10, low_open=True))
        _check_range("momentum", self.momentum, Interval(0, 1, high_open=True))
        _check_range("weight_decay", self.weight_decay, Interval(0, 1))
        _check_range("label_smoothing", self.label_smoothing, Interval(0, 1, high_open=True))
        _check_range("warmup_epochs", self.warmup_epochs, Interval(0, self.epochs))
        _check_range("backbone_lr_scale", self.backbone_lr_scale, Interval(0, 10))
        _check_range("freeze", self.freeze, Interval(0))
        if self.batch_size % self.world_size:
            raise BenchError(
                f"batch size {self.batch_size} is not a multiple of the world size "
                f"{self.world_size}: choose a batch size divisible by {self.world_size}"
            )
        if self.subset is not None:
            _check_range("subset", self.subset, Interval(1))
        if self.image_size is not None:
            _check_range("image_size", self.image_size, IMAGE_SIZE)
        self._check_scales()
        if self.init_from_a and self.model not in ("vgg-b", "vgg-c", "vgg-d", "vgg-e"):
            raise BenchError(
                f"init_from_a starts a deeper VGG (vgg-b, vgg-c, vgg-d, vgg-e) from a trained "
                f"vgg-a; {self.model} is not one: drop --init-from-a"
            )
        if self.init_from_a and self.pretrained is not None:
            raise BenchError("init_from_a and pretrained both set the starting weights: choose one")
        _check_range("loader_workers", self.loader_workers, Interval(0, 64))
        if self.data_holder not in DATA_HOLDERS:
            choices("data holder", self.data_holder, DATA_HOLDERS)
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda", "mps")):
            raise BenchError(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
        model_options.check(self.model, **self.model_options)  # the registry's names: model, head, init

    def _check_scales(self) -> None:
        modes = tuple(m.strip() for m in self.eval_modes.split(","))
        for mode in modes:
            if mode not in EVAL_MODES:
                choices("evaluation mode", mode, EVAL_MODES)
        canonical = {
            "train_scale": self.train_scale and ",".join(map(str, _scales("train_scale", self.train_scale))),
            "test_scales": self.test_scales and ",".join(map(str, _scales("test_scales", self.test_scales))),
            "eval_modes": ",".join(dict.fromkeys(modes)),
        }
        for name, value in canonical.items():  # one spelling per meaning, so equal runs hash equal
            object.__setattr__(self, name, value)
        if self.train_scale is None and (self.test_scales is not None or modes != ("centre",)):
            raise BenchError(
                "test_scales and eval_modes other than centre need train_scale (the paper's scale "
                "protocol, e.g. --train-scale 256); set it too"
            )
        folder = self.dataset.startswith(IMAGE_FOLDERS)
        if self.train_scale is not None and not folder:
            raise BenchError(
                f"train_scale needs an image folder (--dataset imagefolder:PATH or synthetic-images), "
                f"not {self.dataset!r}"
            )
        if self.train_scale is not None:
            s = _scales("train_scale", self.train_scale)
            if len(s) > 2:
                raise BenchError(f"train_scale is S or S_min,S_max, got {self.train_scale!r}")
            if s[0] > s[-1]:
                raise BenchError(
                    f"train_scale range {s[0]},{s[-1]} has min > max; give S_min,S_max with "
                    "S_min <= S_max (e.g. 256,512)"
                )
        if self.data_holder != "auto" and not folder:
            raise BenchError(
                f"data_holder {self.data_holder!r} applies to image folders only; "
                f"{self.dataset!r} is always held in memory: leave it at auto"
            )

    @property
    def a_config(self) -> RunConfig | None:
        """The A run this run starts from (init_from_a): the same settings with model vgg-a."""
        return self.replace(model="vgg-a", init_from_a=False) if self.init_from_a else None

    @property
    def scale_range(self) -> tuple[int, int] | None:
        """(S_min, S_max) at the paper's 224 crop; None without the scale protocol."""
        if self.train_scale is None:
            return None
        s = _scales("train_scale", self.train_scale)
        return s[0], s[-1]

    @property
    def test_scale_list(self) -> tuple[int, ...] | None:
        """The test scales Q at the paper's 224 crop (default: S, or the middle of the S range)."""
        if self.train_scale is None:
            return None
        if self.test_scales is not None:
            return _scales("test_scales", self.test_scales)
        low, high = self.scale_range
        return ((low + high) // 2,)

    @property
    def eval_mode_list(self) -> tuple[str, ...]:
        return tuple(self.eval_modes.split(","))

    @property
    def model_options(self) -> dict[str, Any]:
        """The options bench.models.build takes for this model (the baselines: only width)."""
        if not self.model.startswith("vgg"):
            return {"width": self.width}
        options = dict(batch_norm=self.batch_norm, head=self.head, width=self.width, init=self.init)
        if self.head in model_options.HEADS_WITH_DROPOUT:
            options["dropout"] = self.dropout
        return options

    @property
    def train_epochs(self) -> float:
        """Epochs of training: `epochs`, scaled under equal compute (the last one may be partial)."""
        return self.epochs * self.compute_scale

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run, which the learning-rate schedule spans."""
        return max(1, round(self.train_epochs * steps_per_epoch))

    @property
    def data_settings(self) -> tuple[tuple[str, Any], ...]:
        """(name, value) of the settings that decide a run's images and split: runs equal here share their
        data (RunConfig(**dict(...)) rebuilds a config with just these)."""
        return tuple((f.name, getattr(self, f.name)) for f in fields(self) if f.metadata.get("data"))

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
            raise BenchError(f"unknown setting {sorted(unknown)[0]!r}; valid settings: {', '.join(sorted(known))}")
        return {k: coerce(k, v, hints[k]) for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        return cls(**cls.typed(values))

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **changes})


# The settings added after runs were recorded (see `setting`), read from the fields.
LATER_SETTINGS = frozenset(f.name for f in fields(RunConfig) if f.metadata.get("later"))


# The settings the report reads back from each run's params, with their defaults, read from the fields.
REPORTED_SETTINGS = {f.name: f.default for f in fields(RunConfig) if f.metadata.get("report")}
_HINTS = get_type_hints(RunConfig)


def reported_setting(name: str, logged: str | None) -> Any:
    """A setting the report reads, from its logged param: typed as the field; its default where the run
    was logged before the setting existed."""
    return coerce(name, REPORTED_SETTINGS[name] if logged is None else logged, _HINTS[name])


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


def _check_range(name: str, value, allowed: Interval) -> None:
    if not allowed.holds(value):
        raise BenchError(f"setting {name!r} = {value!r} is out of range {allowed}")


def _scales(name: str, text: str) -> tuple[int, ...]:
    """'256', '256,512', '[256, 512]' -> integers in [224, 2048] (a scale below the crop cannot be cropped)."""
    items = [p.strip() for p in str(text).strip("[]() ").split(",") if p.strip()]
    if not items:
        raise BenchError(f"setting {name!r} needs one or more integers, e.g. 256 or 256,512")
    values = []
    for item in items:
        if not (item.isascii() and item.isdigit()):  # refuses nan, inf, fractions and negatives in one go
            raise BenchError(f"setting {name!r} must be whole pixel sizes like 256 or 256,512, got {text!r}")
        value = int(item)
        if value < PAPER_CROP:
            what = "test scale Q" if name == "test_scales" else "training scale S"
            raise BenchError(
                f"{what} {value} is smaller than the crop ({PAPER_CROP} at the paper's scale): use {PAPER_CROP} or more"
            )
        if value > MAX_SCALE:
            raise BenchError(f"setting {name!r} value {value} is larger than {MAX_SCALE}")
        values.append(value)
    return tuple(values)
