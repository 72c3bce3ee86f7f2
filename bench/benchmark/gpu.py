"""python -m bench.benchmark --suite gpu: everything worth knowing about a CUDA machine, in one run.

Made for a GPU that is lent now and then for half an hour, with no internet, no installs, no
MLflow and no Optuna: it needs the repository, torch/torchvision, rich, pandas, matplotlib, the
Fashion-MNIST files in --data-dir, and timm when present. It measures, in order of what the
targets need first, until everything ran or its time limit (default 520 s) is near:

1. train/inference steps (images/s, step time, peak memory, MFU against the datasheet's bf16 peak
   and a matmul measured in the same run) of every model at 32 px and at 224 px with the paper's
   head; the precision x memory format x compile matrix for VGG-D-BN; timm's vgg16, vgg16_bn
   and resnet18 side by side with ours; a batch that runs out of memory is halved and retried;
2. the training step, eager and captured as a CUDA graph (bench.engine.step): on a fixed batch and a whole
   epoch end to end, VGG-D-BN at 32 px, batch 256 (bench.benchmark.step_overhead);
3. time to 93 % Fashion-MNIST test accuracy for VGG-D-BN: bench.train against the tutorials' loop;
4. a study through the engine with 1, 2, 4 and 8 worker processes sharing the device (packing);
5. the first epoch of each distinct run config of the studies' full budgets at full width on the
   carried data, and from them each study's full budget in hours.

Results go to OUT/gpu-<device>.json and .md (+ the curves' .png), rewritten after every
measurement so that a run cut short keeps what it measured. `--smoke` runs the same code at tiny
sizes on whatever device there is (the CPU in the tests).
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from bench import provenance
from bench.benchmark import budgets, gpu_report, output
from bench.benchmark.step_overhead import overhead
from bench.benchmark.steps import Peaks, measure_model, measure_steps
from bench.benchmark.time_to_accuracy import race
from bench.config import RunConfig
from bench.device import resolve_device
from bench.errors import BenchError, choices, one_line
from bench.models import names as model_names
from bench.progress import console
from bench.run import budget_estimates, studies

FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
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


# --- checks before anything runs ------------------------------------------------------------------


def check(args, plan: Plan) -> tuple[torch.device, tuple[str, ...], tuple[str, ...]]:
    """Device, our models and timm's models to measure, or one line on what is wrong."""
    if not args.out:
        raise BenchError("--suite gpu needs --out DIR: where gpu-<device>.md and .json go (e.g. --out results)")
    if not args.data_dir:
        raise BenchError(
            "--suite gpu needs --data-dir DIR holding the Fashion-MNIST .gz files "
            "(python -m bench.kit build puts them in kit/data/fashion-mnist)"
        )
    folder = Path(args.data_dir)
    missing = [name for name in FASHION_FILES if not (folder / name).is_file()]
    if missing:
        where = f"{folder} does not exist" if not folder.is_dir() else f"{folder} lacks {', '.join(missing)}"
        raise BenchError(
            f"carried data folder: {where}; run python -m bench.kit build (copies them from "
            "/usr/share/datasets/fashion-mnist into kit/data/fashion-mnist) and carry kit/"
        )
    wants_gpu = str(args.device).startswith("cuda") or (args.device is None and not args.smoke)
    if wants_gpu and not torch.cuda.is_available():
        found = f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}) sees no CUDA device"
        raise BenchError(
            f"--suite gpu needs a GPU: {found}; use --smoke for the tiny CPU check, "
            "or --device cpu to run the full sizes on the CPU"
        )
    device = resolve_device(args.device or "auto")
    models = tuple(m.strip() for m in args.model.split(",")) if args.model else plan.models
    for name in models:
        if name not in model_names():
            choices("model", name, model_names())
    timm, _ = peer_library()
    timm_models = plan.timm_models
    if args.timm_models is not None:
        timm_models = tuple(m.strip() for m in args.timm_models.split(",") if m.strip())
        known = timm.list_models() if timm is not None else None
        for name in timm_models:
            if known is not None and name not in known:
                raise BenchError(f"unknown timm model {name!r}; see timm.list_models(), e.g. vgg16, resnet18")
    return device, models, timm_models


def peer_library():
    """(the timm module, None), or (None, why it cannot be used here)."""
    try:
        import timm
    except ImportError:
        return None, "timm is not installed here"
    except Exception as exc:  # noqa: BLE001 - a timm that does not fit this torch: its rows say so, the rest runs
        return None, f"timm does not import here ({type(exc).__name__}: {one_line(exc)})"
    return timm, None


# --- the run ------------------------------------------------------------------------------------


class Suite:
    def __init__(self, plan: Plan, args, argv: list[str]):
        self.plan = plan
        self.args = args
        self.device, self.models, self.timm_models = check(args, plan)
        self.timm, self.timm_missing = peer_library()
        self.estimate_names = list(plan.estimate_studies) if plan.estimate_studies else studies.names()
        self.began = time.perf_counter()
        self.limit = args.time_limit if args.time_limit is not None else plan.time_limit_s
        self.out = Path(args.out)
        self.peaks = Peaks(plan.matmul_size)
        slug = "cpu" if self.device.type == "cpu" else _slug(provenance.device_name(self.device))
        self.base = f"gpu-{slug}" + ("-smoke" if plan.name == "smoke" else "")
        self.results = {
            "kind": "gpu-suite",
            **output.stamp(self.device, argv),
            "plan": asdict(plan),
            "time_limit_s": self.limit,
            "timm": getattr(self.timm, "__version__", None),
            "timm_missing": self.timm_missing,
            "peaks": [],
            "steps": [],
            "step_overhead": None,
            "race": None,
            "workers": None,
            "first_epochs": {},
            "estimates": [],
            "skipped": [],
            "failed": [],
            "task_seconds": {},
            "seconds": 0.0,
        }

    def left(self) -> float:
        return self.limit - (time.perf_counter() - self.began)

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are fp32; bf16 rows use autocast
        for name, cost, task in self.tasks():
            if self.left() < cost:
                self.results["skipped"].append(f"{name} (needs ~{cost:.0f} s, {max(0.0, self.left()):.0f} s left)")
                continue
            console.print(f"[bold]{name}[/] ({self.left():.0f} s left)")
            began = time.perf_counter()
            try:
                task()
            except KeyboardInterrupt:
                self.results["failed"].append(f"{name}: interrupted")
                self.write()
                raise
            except Exception as exc:  # noqa: BLE001 - one failed measurement must not lose the others
                text = one_line(exc, 300)
                self.results["failed"].append(f"{name}: {type(exc).__name__}: {text}")
                console.print(f"[red]failed[/] {name}: {type(exc).__name__}: {text}")
                traceback.print_exc()
            self.results["task_seconds"][name] = time.perf_counter() - began
            self.write()
        return 1 if self.results["failed"] else 0

    def tasks(self) -> list[tuple[str, float, Callable[[], None]]]:
        step_rows = rows(self.plan, self.models, self.timm_models)
        first = [r for r in step_rows if r.group.startswith("target")]
        rest = [r for r in step_rows if r not in first]
        tasks = [(f"steps: {r.group}: {_describe(r)}", r.cost_s, lambda r=r: self.step(r)) for r in first]
        tasks.append(("training step: eager vs CUDA graph, fixed batch vs end to end", 40.0, self.step_overhead))
        tasks.append((f"time to {self.plan.target:.0%} test accuracy", 150.0, self.race))
        tasks += [
            (f"steps: {r.group}: {_describe(r)}", r.cost_s, lambda r=r: self.step(r))
            for r in rest
            if not r.compile and r.group != "fp32 NCHW (the tutorials' default)"
        ]
        plan = self.plan
        tasks.append(
            (
                f"{plan.study} {plan.study_budget} study with {plan.study_workers} workers",
                plan.study_cost_s,
                self.workers,
            )
        )
        configs = budget_estimates.full_budget_configs(self.estimate_names, self.args.data_dir)
        ordered = sorted(configs.items(), key=lambda item: self.plan.study not in item[1]["studies"])
        for key, entry in ordered:
            label = f"first epoch of {entry['config'].model} ({', '.join(entry['studies'])})"
            tasks.append((label, 12.0, lambda key=key, entry=entry: self.first_epoch(key, entry)))
        tasks += [
            (f"steps: {r.group}: {_describe(r)}", r.cost_s, lambda r=r: self.step(r))
            for r in rest
            if r.compile or r.group == "fp32 NCHW (the tutorials' default)"
        ]
        return tasks

    # --- the tasks

    def step(self, row: Row) -> None:
        plan = self.plan
        image, batch = plan.small if row.size == "small" else plan.large
        classes = 10 if row.size == "small" else plan.large_classes
        head = "small" if row.size == "small" else "paper"
        settings = dict(
            batch_size=batch,
            precision=row.precision,
            channels_last=row.channels_last,
            compile=row.compile,
            device=str(self.device),
            image_size=image,
        )
        if row.source == "timm":
            if self.timm is None:
                self.results["steps"].append({**_row_fields(row), "skipped": self.timm_missing})
                return
            model = self.timm.create_model(row.model, pretrained=False, num_classes=classes, in_chans=3)
            config = RunConfig(**settings)  # execution settings and the optimizer only
            result = measure_model(
                model,
                f"timm:{row.model}",
                {},
                config,
                (3, image, image),
                classes,
                plan.steps,
                plan.warmup,
                self.peaks,
                profile=row.profile,
            )
        else:
            options = {"batch_norm": row.batch_norm, "head": head} if row.model in VGGS else {}
            config = RunConfig(model=row.model, width=plan.width, **options, **settings)
            result = measure_steps(config, 3, classes, plan.steps, plan.warmup, self.peaks, profile=row.profile)
        self.results["steps"].append({**_row_fields(row), **result})
        self.results["peaks"] = self.peaks.summary()

    def step_overhead(self) -> None:
        config = RunConfig.from_dict({**self.plan.recipe, "device": str(self.device)})
        plan = self.plan
        self.results["step_overhead"] = overhead(config, self.args.data_dir, plan.steps, plan.warmup)

    def race(self) -> None:
        config = RunConfig.from_dict({**self.plan.recipe, "device": str(self.device)})
        self.results["race"] = race(
            config, self.plan.target, self.args.data_dir, self.args.loader_workers, self.plan.tutorial_cap, self.left
        )

    def workers(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # the workers share the device: leave them what earlier rows cached
        plan = self.plan
        self.results["workers"] = budgets.workers_share(
            plan.study,
            str(self.device),
            plan.study_workers,
            self.args.data_dir,
            plan.study_budget,
            plan.study_overrides,
            plan.study_seeds,
        )

    def first_epoch(self, key: str, entry: dict) -> None:
        measured = budgets.first_epoch(
            entry["config"],
            self.args.data_dir,
            budget_estimates.CARRIED,
            {"device": str(self.device), **self.plan.estimate_overrides},
        )
        self.results["first_epochs"][key] = {**measured, "studies": entry["studies"]}
        self.results["estimates"] = budget_estimates.estimates(
            self.estimate_names, self.results["first_epochs"], self.args.data_dir
        )

    # --- output

    def write(self) -> None:
        self.results["seconds"] = time.perf_counter() - self.began
        self.results["targets"] = gpu_report.targets(self.results)
        _write(self.out / f"{self.base}.json", json.dumps(self.results, indent=1, default=str))
        figure = gpu_report.curves_figure(self.results, self.out / f"{self.base}-curves.png")
        _write(self.out / f"{self.base}.md", gpu_report.markdown(self.results, figure))


def _row_fields(row: Row) -> dict:
    return {
        "group": row.group,
        "source": row.source,
        "label": row.label,
        "size": row.size,
        "precision": row.precision,
        "channels_last": row.channels_last,
        "compile": row.compile,
    }


def _describe(row: Row) -> str:
    return (
        f"{row.label} {row.size} {row.precision} {'channels_last' if row.channels_last else 'NCHW'} "
        f"{'compiled' if row.compile else 'eager'}"
    )


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _write(path: Path, text: str) -> None:
    """Atomically: a run killed mid-write leaves the previous version."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_suite(args, argv: list[str]) -> int:
    suite = Suite(SMOKE if args.smoke else FULL, args, argv)
    code = suite.run()
    console.print(
        f"wrote {suite.out / suite.base}.md and .json in {suite.results['seconds']:.0f} s"
        + (f"; {len(suite.results['failed'])} failed" if suite.results["failed"] else "")
    )
    print((suite.out / f"{suite.base}.md").read_text())
    return code
