"""The model registry's names and the options each model takes, checked without torch: RunConfig
checks a run's model settings here, and bench.models.build builds from what `check` returns."""

from __future__ import annotations

from numbers import Real

from bench.errors import BenchError, choices
from bench.ranges import DROPOUT, WIDTH, Interval

# The paper and light heads have hidden FC layers (4096-4096 as the paper, 1024-256 lighter), the
# only layers a dropout setting applies to; the small and gap heads go straight to the classes.
HIDDEN_LAYERS = {"paper": (4096, 4096), "light": (1024, 256)}
HEADS_WITH_DROPOUT = tuple(HIDDEN_LAYERS)
HEADS = (*HEADS_WITH_DROPOUT, "small", "gap")
INITS = ("paper", "kaiming", "xavier")

VGG_COLUMNS = {"vgg-a": "A", "vgg-a-lrn": "A-LRN", "vgg-b": "B", "vgg-c": "C", "vgg-d": "D", "vgg-e": "E"}
BASELINES = ("resnet18", "mobilenetv2")

_COMMON = {"num_classes": 10, "in_channels": 3, "image_size": 32, "width": 1.0}
_VGG_ONLY = {"batch_norm": False, "head": "small", "init": "kaiming", "dropout": 0.5}
_MIN_IMAGE = {"vgg": 32, "baseline": 16}  # VGG: five 2x2 pools need at least 32 px


def names() -> list[str]:
    return [*VGG_COLUMNS, *BASELINES]


def check(name: str, **options) -> dict:
    """The options `build(name, **options)` would use, defaults filled in, or a BenchError naming
    the first one that does not fit."""
    if name in VGG_COLUMNS:
        opts = _checked(name, options, {**_COMMON, **_VGG_ONLY}, _MIN_IMAGE["vgg"])
        if not isinstance(opts["batch_norm"], bool):
            raise BenchError(f"batch_norm must be True or False, got {opts['batch_norm']!r}")
        if opts["head"] not in HEADS:
            choices("head", opts["head"], HEADS)
        if opts["init"] not in INITS:
            choices("init", opts["init"], INITS)
        _number("dropout", opts["dropout"], DROPOUT)
        if "dropout" in options and opts["head"] not in HEADS_WITH_DROPOUT:
            # Silently ignoring it would make a dropout ablation on these heads a no-op.
            raise BenchError(
                f"option dropout does not apply to head {opts['head']!r} (only to: {', '.join(HEADS_WITH_DROPOUT)})"
            )
        return opts
    if name in BASELINES:
        for key in sorted(_VGG_ONLY.keys() & options.keys()):
            # batch_norm=True is allowed so a study can pass it to every model; these always have BN.
            if not (key == "batch_norm" and options[key] is True):
                raise BenchError(f"option {key}={options[key]!r} does not apply to {name}")
        options = {k: v for k, v in options.items() if k not in _VGG_ONLY}
        return _checked(name, options, _COMMON, _MIN_IMAGE["baseline"])
    choices("model", name, names())


def _checked(name: str, options: dict, defaults: dict, min_image: int) -> dict:
    """`options` over `defaults`, with the options every model takes validated."""
    for key in sorted(options.keys() - defaults.keys()):
        choices("option", key, defaults)
    opts = {**defaults, **options}
    _integer("num_classes", opts["num_classes"], 2)
    if opts["in_channels"] not in (1, 3) or isinstance(opts["in_channels"], bool):
        raise BenchError(f"in_channels must be 1 or 3, got {opts['in_channels']!r}")
    _integer("image_size", opts["image_size"], min_image, f" for {name}")
    _number("width", opts["width"], WIDTH)
    return opts


def _integer(option: str, value, minimum: int, where: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BenchError(f"{option} must be an integer >= {minimum}{where}, got {value!r}")


def _number(option: str, value, allowed: Interval) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not allowed.holds(value):
        raise BenchError(f"{option} must be a number in {allowed}, got {value!r}")
