"""The step grid: train-step and inference speed, memory and MFU of model configurations on a fixed batch.

Per configuration, on a random batch already on the device: parameters and forward FLOPs
(bench.models.describe), train-step and inference images/s and step latency (the median over the
timed steps after warm-up), peak memory, and on CUDA the model FLOP utilisation of the train step
(counted as 3x the forward FLOPs) against the datasheet's dense bf16 peak and a large matmul
measured in the same run. A batch that runs out of CUDA memory is halved and measured again; the
row says so.

With --rounds R the whole grid is measured R times, its points in alternating order (1 2 3, 3 2 1,
...), each time built afresh; every pair of points then gets its train and inference speed ratio
as the median of the rounds' paired ratios with its interval and verdict (bench.speed_ratio),
beside the machine's load.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import torch
import torch.nn.functional as F

from bench import models, progress, speed_ratio
from bench.benchmark import kernels
from bench.benchmark.measure import (
    device_peaks,
    halving_on_oom,
    peak_memory,
    step_times,
    utilisation,
)
from bench.config import RunConfig
from bench.device import free_memory, resolve_device
from bench.engine.optimization import make_optimizer
from bench.engine.precision import autocast, resolve_precision
from bench.errors import BenchError, one_line

DEFAULT_IMAGE_SIZE = 32  # the step grid has no dataset to take a size from


def check_buildable(config: RunConfig, in_channels: int, num_classes: int) -> None:
    """Every model option checked before anything is measured (on the meta device: no memory)."""
    device = resolve_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device {config.device!r} asked for but CUDA is not available here; use --device cpu")
    with torch.device("meta"):
        build(config, in_channels, num_classes)


def build(config: RunConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    return models.build(
        config.model,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=config.image_size or DEFAULT_IMAGE_SIZE,
        **config.model_options,
    )


def model_options(config: RunConfig) -> dict[str, Any]:
    return {k: v for k, v in config.model_options.items() if k != "init"}


class Peaks:
    """The matmul peak of each (device, precision), measured once, the first time a row needs it."""

    def __init__(self, matmul_size: int):
        self.matmul_size = matmul_size
        self.measured: dict[tuple[str, str], dict[str, float | None]] = {}

    def get(self, device: torch.device, precision: str) -> dict[str, float | None] | None:
        if device.type != "cuda":
            return None
        key = (str(device), precision)
        if key not in self.measured:
            self.measured[key] = device_peaks(device, precision, self.matmul_size)
        return self.measured[key]

    def summary(self) -> list[dict]:
        return [
            {"device": device, "precision": precision, **values}
            for (device, precision), values in self.measured.items()
        ]


def step_grid(configs: list[RunConfig], args) -> tuple[list[dict], dict]:
    peaks = Peaks(args.matmul_size)
    rows, count, load_before = [], args.rounds, speed_ratio.load()
    points = list(enumerate(configs, 1))
    bar = progress.make_progress()
    with bar:
        task = bar.add_task("step grid", total=len(configs) * count, info="")
        for number in range(1, count + 1):
            for point, config in speed_ratio.in_turns(points, number):
                bar.update(task, info=f"round {number}: {config.model} batch {config.batch_size} {config.precision}")
                row = measure_steps(config, args.in_channels, args.num_classes, args.steps, args.warmup, peaks)
                rows.append({"round": number, "point": point, **row})
                bar.advance(task)
    summary = {"steps": args.steps, "warmup": args.warmup, "rounds": count, "peaks": peaks.summary()}
    if count > 1:
        summary["load_average_1min"] = [load_before, speed_ratio.load()]
        summary["ratios"] = point_ratios(rows, summary["load_average_1min"])
    return rows, summary


# The settings a grid varies; a point's label names those that differ between points.
LABELLED = ("model", "batch_size", "image_size", "precision", "channels_last", "compile")


def point_ratios(rows: list[dict], loads: list[float]) -> list[dict]:
    """Every pair of grid points (later over earlier): train and inference images/s as the median
    of the rounds' paired ratios, with interval and verdict."""
    by_point: dict[int, dict[int, dict]] = {}
    for r in rows:
        by_point.setdefault(r["point"], {})[r["round"]] = r
    varied = [k for k in LABELLED if len({str(r[k]) for r in rows}) > 1]
    label = {
        p: " ".join(f"{k}={next(iter(rs.values()))[k]}" for k in varied) or f"point {p}" for p, rs in by_point.items()
    }
    ratios = []
    for low_point, high_point in itertools.combinations(sorted(by_point), 2):
        base, other = by_point[low_point], by_point[high_point]
        both = sorted(set(base) & set(other))
        ratios.append(
            {
                "point": high_point,
                "against": low_point,
                "label": f"{label[high_point]} / {label[low_point]}",
                **{
                    kind: speed_ratio.paired_ratio(
                        [other[n][f"{kind}_images_per_s"] for n in both],
                        [base[n][f"{kind}_images_per_s"] for n in both],
                        loads,
                    )
                    for kind in ("train", "infer")
                },
            }
        )
    return ratios


def measure_steps(
    config: RunConfig, in_channels: int, num_classes: int, steps: int, warmup: int, peaks: Peaks, profile: bool = False
) -> dict:
    """One of our models (config.model with its options), measured by `measure_model`."""
    torch.manual_seed(config.seed)
    model = build(config, in_channels, num_classes)
    size = config.image_size or DEFAULT_IMAGE_SIZE
    return measure_model(
        model,
        config.model,
        model_options(config),
        config,
        (in_channels, size, size),
        num_classes,
        steps,
        warmup,
        peaks,
        profile,
    )


def measure_model(
    model: torch.nn.Module,
    name: str,
    options: dict[str, Any],
    config: RunConfig,
    shape: tuple[int, int, int],
    num_classes: int,
    steps: int,
    warmup: int,
    peaks: Peaks,
    profile: bool = False,
) -> dict:
    """Train-step and inference speed of `model` on a fixed batch resident on the device.

    `config` gives the execution settings (device, precision, channels_last, compile, batch size)
    and the optimizer; any module (ours or a peer's) is measured the same way. With `profile`,
    the row also says where a train step's time goes (bench.benchmark.kernels).
    """
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    peak = peaks.get(device, precision)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    free_memory(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = model.to(device)
    description = models.describe(model, shape)
    model = model.to(memory_format=memory_format)
    optimizer = make_optimizer(config, model)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if config.compile:
        torch._dynamo.reset()  # every VGG shares one forward: without a reset a grid hits the recompile limit
    step_model = torch.compile(model) if config.compile else model

    def measure(batch_size: int) -> dict:
        free_memory(device)
        x = torch.randn(batch_size, *shape, device=device).contiguous(memory_format=memory_format)
        y = torch.randint(0, num_classes, (batch_size,), device=device)

        def train_step() -> None:
            with autocast(device, precision):
                loss = F.cross_entropy(step_model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        @torch.no_grad()
        def infer_step() -> None:
            with autocast(device, precision):
                step_model(x)

        step_model.train()
        warmup_s = sum(step_times(train_step, warmup, device))  # includes torch.compile's compilation
        train_s = statistics.median(step_times(train_step, steps, device))
        step_model.eval()
        step_times(infer_step, warmup, device)
        infer_s = statistics.median(step_times(infer_step, steps, device))
        measured = {"train_s": train_s, "infer_s": infer_s, "warmup_s": warmup_s}
        if profile:
            step_model.train()
            try:
                measured["profile"] = kernels.breakdown(train_step, device, 1e3 * train_s)
            except RuntimeError as exc:  # a profiler that cannot start here must not cost the row its numbers
                measured["profile"] = {"error": f"{type(exc).__name__}: {one_line(exc)}"}
        return measured

    times, batch_size, out_of_memory = halving_on_oom(measure, config.batch_size, device)
    memory, memory_kind = peak_memory(device)
    row = {
        "model": name,
        **options,
        "image_size": shape[-1],
        "in_channels": shape[0],
        "num_classes": num_classes,
        "batch_size": batch_size,
        "precision": precision,
        "channels_last": config.channels_last,
        "compile": config.compile,
        "device": str(device),
        "params": description.params,
        "flops": description.flops,
        "train_images_per_s": batch_size / times["train_s"],
        "train_step_ms": 1e3 * times["train_s"],
        "infer_images_per_s": batch_size / times["infer_s"],
        "infer_step_ms": 1e3 * times["infer_s"],
        "warmup_s": times["warmup_s"],
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "out_of_memory_at": out_of_memory,  # batch sizes that did not fit before `batch_size` did
        **({"profile": times["profile"]} if profile else {}),
    }
    row.update(utilisation(row, peak))
    return row  # the model goes with this frame; the next measurement starts with free_memory
