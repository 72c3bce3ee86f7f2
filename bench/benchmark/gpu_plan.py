"""What the GPU suite measures, at which sizes: FULL on a GPU, SMOKE in the tests; the step rows in the
order they run; and the Fashion-MNIST files it reads from --data-dir."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.data.idx import GZ_FILES

FASHION_FILES = GZ_FILES
VGGS = ("vgg-a", "vgg-b", "vgg-c", "vgg-d", "vgg-e")


@dataclass(frozen=True)
class Plan:
    """What the suite measures, at which sizes: FULL on a GPU, SMOKE in the tests."""

    name: str
    width: float
    small: tuple[int, int]  # (image size, batch) with the small head, 10 classes
    large: tuple[int, int]  # (image size, batch) with the paper's head
    large_classes: int
    steps: int
    warmup: int
    matmul_size: int
    models: tuple[str, ...]  # ours; every VGG with and without BatchNorm
    timm_models: tuple[str, ...]  # measured at the large size, as timm's own benchmark does
    compile: bool  # whether compiled rows are measured at all
    recipe: dict = field(default_factory=dict)  # the time-to-accuracy run's settings
    target: float = 0.93
    tutorial_cap: float = 3.2  # the tutorial loop stops past this many times bench.train's time to target
    study: str = "depth"
    study_workers: tuple[int, ...] = (1, 2)
    study_budget: str = "smoke"  # packing: the study's budget, shortened by study_overrides, at study_seeds
    study_overrides: dict = field(default_factory=dict)
    study_seeds: tuple[int, ...] | None = None
    study_cost_s: float = 40.0
    estimate_studies: tuple[str, ...] | None = None  # None: every study with a full budget
    estimate_overrides: dict = field(default_factory=dict)
    time_limit_s: float = 520.0  # the device machines stop a command at 600 s; imports and CUDA start come first


FULL = Plan(
    name="full",
    width=1.0,
    small=(32, 512),
    large=(224, 128),
    large_classes=1000,
    steps=20,
    warmup=5,
    matmul_size=8192,
    models=(*VGGS, "resnet18", "mobilenetv2"),
    timm_models=("vgg16", "vgg16_bn", "resnet18"),
    compile=True,
    # Packing: the depth study's gpu budget (full width, batch 128, 32 px), 8 runs of 2 epochs on 24k images,
    # at 1, 2, 4 and 8 workers: runs per hour against one worker's (the target: 3x).
    study_workers=(1, 2, 4, 8),
    study_budget="gpu",
    study_overrides={"epochs": 2, "subset": 24000},
    study_seeds=(0, 1),
    study_cost_s=100.0,
    # bench.train's recipe for VGG-D-BN on Fashion-MNIST: SGD + Nesterov, cosine over 30 epochs with
    # a one-epoch warm-up, batch 256, crop + flip on the device, bf16 autocast, channels_last, eager.
    recipe=dict(
        model="vgg-d",
        batch_norm=True,
        dataset="fashion-mnist",
        epochs=30,
        batch_size=256,
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="cosine",
        warmup_epochs=1.0,
    ),
)
# The tests' run: every code path at sizes a busy 2-core CPU does in about a minute. The race runs on
# the synthetic set (its test split is 500 images, Fashion-MNIST's 10,000); the first epochs read the
# carried Fashion-MNIST files. Compiling on a CPU takes minutes, so the compiled rows are GPU-only.
SMOKE = Plan(
    name="smoke",
    width=0.0625,
    small=(32, 8),
    large=(64, 4),
    large_classes=10,
    steps=2,
    warmup=1,
    matmul_size=256,
    models=("vgg-d", "resnet18"),
    timm_models=("test_resnet",),
    compile=False,
    recipe=dict(
        model="vgg-d",
        batch_norm=True,
        dataset="synthetic",
        subset=320,
        width=0.0625,
        epochs=2,
        batch_size=32,
        optimizer="adam",
        lr=0.01,
        schedule="cosine",
        augment=False,
    ),
    target=0.5,
    study_workers=(1, 2),
    estimate_studies=("depth",),
    estimate_overrides={"width": 0.0625, "subset": 300},
    time_limit_s=600.0,
)


@dataclass(frozen=True)
class Row:
    """One step-grid measurement the suite makes."""

    group: str
    source: str  # "bench" or "timm"
    model: str
    batch_norm: bool
    size: str  # "small" or "large"
    precision: str
    channels_last: bool
    compile: bool
    profile: bool = False

    @property
    def label(self) -> str:
        name = self.model if self.source == "bench" else f"timm {self.model}"
        return name + ("-bn" if self.batch_norm and self.model in VGGS else "")

    @property
    def cost_s(self) -> float:
        """A generous guess of its time on an H100, so the suite starts only what fits the time left."""
        return 90.0 if self.compile else (12.0 if self.size == "large" else 6.0)


def rows(plan: Plan, models: tuple[str, ...], timm_models: tuple[str, ...]) -> list[Row]:
    """The step rows in the order they run: first those the targets need, the extras last."""

    def ours(size: str, group: str, precision: str = "bf16", channels_last: bool = True) -> list[Row]:
        return [
            Row(group, "bench", m, bn, size, precision, channels_last, False)
            for m in models
            for bn in ((False, True) if m in VGGS else (True,))
        ]

    def d_bn(group: str, precision: str, channels_last: bool, compiled: bool, profile: bool = False) -> Row:
        return Row(group, "bench", "vgg-d", True, "small", precision, channels_last, compiled, profile)

    def peers(precision: str, channels_last: bool, compiled: bool, names: tuple[str, ...]) -> list[Row]:
        return [Row("timm", "timm", name, False, "large", precision, channels_last, compiled) for name in names]

    compiled = plan.compile
    planned = [
        d_bn("target: MFU", "bf16", True, False, profile=True),
        *([d_bn("target: MFU", "bf16", True, True, profile=True)] if compiled else []),
        Row("target: vs timm", "bench", "vgg-d", False, "large", "bf16", True, False, profile=True),
        *[
            Row("target: vs timm", "timm", name, False, "large", "bf16", True, False, profile=True)
            for name in timm_models[:1]
        ],
        *ours("small", "all models, 32 px"),
        *ours("large", "all models, paper head"),
        *peers("bf16", True, False, timm_models),
        *peers("fp32", False, False, timm_models),
        *[d_bn("VGG-D-BN matrix", p, cl, False) for p in ("bf16", "fp32") for cl in (True, False)],
        *(
            [
                Row("compiled, paper head", "bench", "vgg-d", False, "large", "bf16", True, True),
                *peers("bf16", True, True, timm_models[:1]),
            ]
            if compiled
            else []
        ),
        *([d_bn("VGG-D-BN matrix", p, cl, True) for p in ("bf16", "fp32") for cl in (True, False)] if compiled else []),
        *ours("small", "fp32 NCHW (the tutorials' default)", "fp32", False),
    ]
    seen, unique = set(), []
    for row in planned:
        key = (row.source, row.model, row.batch_norm, row.size, row.precision, row.channels_last, row.compile)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique
