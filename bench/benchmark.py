"""python -m bench.benchmark: how fast the harness trains, and how close to the hardware's limit.

Four measurements; every output carries bench.provenance.stamp(device), the exact command and the date.

step grid (the default)
    Per model configuration, on a fixed random batch already on the device: parameters and forward
    FLOPs (bench.models.describe), train-step and inference images/s and step latency (the median
    over the timed steps after warm-up), peak memory, and on CUDA the model FLOP utilisation of the
    train step (counted as 3x the forward FLOPs) against two peaks: the datasheet's dense bf16
    figure for the GPU, when it is in the table below, and a large matmul measured in the same run
    in the run's precision. Comma-separated values of --model, --batch-size, --precision,
    --channels-last, --compile and --image-size expand to their cartesian product.
--end-to-end
    Images/s of real epochs of bench.train's Engine (data on the device, batch augmentation,
    channels_last) against the tutorials' loop (bench.tutorial_loop) on the same model, data, batch
    size and steps, alternating epoch by epoch (A B A B ...) in one process, and their ratio.
--until ACC
    Trains a recipe (any run setting) with bench.train.fit until validation accuracy reaches ACC:
    seconds and epochs.
--tracking-overhead
    What MLflow and Optuna add to each run: a study's smoke budget run through bench.ablation
    (tracked) and the same configs through bench.train.fit alone (bare), alternately; the
    difference, per run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import re
import resource
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from bench import models, progress, provenance
from bench.config import RunConfig
from bench.errors import BenchError, cli
from bench.train import (Engine, add_config_flags, autocast, fit, given_settings, make_optimizer, resolve_device,
                         resolve_precision)
from bench.tutorial_loop import TutorialLoop

# Run settings that take comma-separated lists, expanded to their cartesian product.
GRID = ("model", "batch_size", "precision", "channels_last", "compile", "image_size")
BOOL_GRID = ("channels_last", "compile")
DEFAULT_IMAGE_SIZE = 32  # the step grid has no dataset to take a size from
TRAIN_FLOPS_PER_FORWARD = 3  # forward + backward (gradients of inputs and of weights)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
END_TO_END_EPOCHS = 3  # epochs of each loop when --epochs is not given

# Dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets, matched against
# torch.cuda.get_device_name in order (the first match wins, so variants come before families).
DATASHEET_BF16_TFLOPS = (
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.5),
    (r"H100|H200|GH200", 989.4),  # SXM: 1,979 with 2:4 sparsity
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"L40\b", 181.0),
    (r"L4\b", 121.0),
    (r"A10\b", 125.0),
    (r"RTX 4090", 165.2),  # fp32 accumulate, as autocast uses
    (r"RTX 3090", 71.0),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise BenchError(message)  # one line through cli() rather than argparse's usage dump


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench.benchmark", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--end-to-end", action="store_true",
                       help="bench.train epochs vs the tutorials' DataLoader loop, alternately (--epochs each, default 3)")
    modes.add_argument("--until", type=float, metavar="ACC", help="train the recipe until validation accuracy >= ACC")
    modes.add_argument("--tracking-overhead", action="store_true",
                       help="seconds MLflow + Optuna add to each run of a study's smoke budget")
    grid = p.add_argument_group("grid (comma-separated values expand to their cartesian product)")
    for name in GRID:
        flag = "--" + name.replace("_", "-")
        if name in BOOL_GRID:
            grid.add_argument(flag, dest=name, nargs="?", const="on", metavar="on,off")
            grid.add_argument("--no-" + flag[2:], dest=name, action="store_const", const="off")
        else:
            grid.add_argument(flag, dest=name, metavar="A,B")
    grid.add_argument("--in-channels", type=int, default=3, help="step grid: input channels (default 3)")
    grid.add_argument("--num-classes", type=int, default=10, help="step grid: classes (default 10)")
    grid.add_argument("--steps", type=int, default=20, help="step grid: timed steps (default 20)")
    grid.add_argument("--warmup", type=int, default=5, help="step grid: untimed steps first (default 5)")
    grid.add_argument("--matmul-size", type=int, default=8192, help="CUDA: n of the n x n matmul peak (default 8192)")
    p.add_argument("--loader-workers", type=int, default=2, help="--end-to-end: the tutorial DataLoader's workers")
    p.add_argument("--study", default="depth", help="--tracking-overhead: whose smoke budget (default depth)")
    p.add_argument("--repeats", type=int, default=2, help="--tracking-overhead: bare/tracked pairs (default 2)")
    p.add_argument("--data-dir", help="where dataset files are (default: $BENCH_DATA, system location, download)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout (the table goes to stderr)")
    p.add_argument("--csv", metavar="PATH", help="also write the table's rows, with provenance, to PATH")
    recipe = p.add_argument_group("run settings (model options for every mode; the rest for --end-to-end/--until)")
    add_config_flags(recipe, defaults=False, exclude=GRID)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    for name, least in (("steps", 1), ("warmup", 0), ("repeats", 1), ("loader_workers", 0), ("matmul_size", 1)):
        if getattr(args, name) < least:
            raise BenchError(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(args, name)}")
    if args.until is not None and not 0 < args.until <= 1:
        raise BenchError(f"--until is a validation accuracy in (0, 1], got {args.until}")
    configs = expand_grid(args)
    if args.tracking_overhead:
        kind, rows, summary, device = "tracking-overhead", *tracking_overhead(args.study, args.repeats, args.data_dir)
    elif args.end_to_end or args.until is not None:
        if len(configs) > 1:
            raise BenchError("--end-to-end and --until take one value per setting, not a comma-separated grid")
        config = configs[0]
        if args.end_to_end:
            if args.epochs is None:
                config = config.replace(epochs=END_TO_END_EPOCHS)
            kind, rows, summary = "end-to-end", *end_to_end(config, args.loader_workers, args.data_dir)
        else:
            kind, rows, summary = "until", *until(config, args.until, args.data_dir)
        device = resolve_device(config.device)
    else:
        for config in configs:
            check_buildable(config, args.in_channels, args.num_classes)
        if args.warmup < 1 and any(config.compile for config in configs):
            raise BenchError("--compile needs --warmup 1 or more, or the timed steps include the compilation")
        kind, rows, summary = "steps", *step_grid(configs, args)
        device = resolve_device(configs[0].device)
    report(kind, rows, summary, device, argv, args)
    return 0 if summary.get("reached", True) else 1


# --- the grid ------------------------------------------------------------------------------------


def expand_grid(args: argparse.Namespace) -> list[RunConfig]:
    """One RunConfig per point of the cartesian product of the GRID settings' comma-separated values."""
    shared = {k: v for k, v in given_settings(args).items() if k not in GRID}
    axes = [[v.strip() for v in getattr(args, name).split(",")] if getattr(args, name) else [None] for name in GRID]
    configs = []
    for values in itertools.product(*axes):
        chosen = {name: value for name, value in zip(GRID, values) if value is not None}
        configs.append(RunConfig.from_dict({**shared, **chosen}))
    return configs


def check_buildable(config: RunConfig, in_channels: int, num_classes: int) -> None:
    """Every model option checked before anything is measured (on the meta device: no memory)."""
    device = resolve_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"device {config.device!r} asked for but CUDA is not available here; use --device cpu")
    with torch.device("meta"):
        build(config, in_channels, num_classes)


def build(config: RunConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    return models.build(config.model, num_classes=num_classes, in_channels=in_channels,
                        image_size=config.image_size or DEFAULT_IMAGE_SIZE, **config.model_options)


# --- the step grid -------------------------------------------------------------------------------


def step_grid(configs: list[RunConfig], args) -> tuple[list[dict], dict]:
    peaks: dict[tuple[str, str], dict[str, float | None]] = {}
    rows = []
    bar = progress.make_progress()
    with bar:
        task = bar.add_task("step grid", total=len(configs), info="")
        for config in configs:
            device = resolve_device(config.device)
            precision = resolve_precision(config.precision, device)
            if device.type == "cuda" and (str(device), precision) not in peaks:
                bar.update(task, info=f"peak: {args.matmul_size}^2 {precision} matmul")
                peaks[str(device), precision] = device_peaks(device, precision, args.matmul_size)
            bar.update(task, info=f"{config.model} batch {config.batch_size} {precision}")
            row = measure_steps(config, args.in_channels, args.num_classes, args.steps, args.warmup)
            row.update(utilisation(row, peaks.get((str(device), precision))))
            rows.append(row)
            bar.advance(task)
    return rows, {"steps": args.steps, "warmup": args.warmup, "peaks": [
        {"device": device, "precision": precision, **values} for (device, precision), values in peaks.items()]}


def measure_steps(config: RunConfig, in_channels: int, num_classes: int, steps: int, warmup: int) -> dict:
    """Train-step and inference speed of one configuration on a fixed batch resident on the device."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    size = config.image_size or DEFAULT_IMAGE_SIZE
    shape = (in_channels, size, size)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(config.seed)
    model = build(config, in_channels, num_classes).to(device)
    description = models.describe(model, shape)
    model = model.to(memory_format=memory_format)
    optimizer = make_optimizer(config, model)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if config.compile:
        torch._dynamo.reset()  # every VGG shares one forward: without a reset the grid hits the recompile limit
    step_model = torch.compile(model) if config.compile else model
    x = torch.randn(config.batch_size, *shape, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, num_classes, (config.batch_size,), device=device)

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
    memory, memory_kind = peak_memory(device)
    return {
        "model": config.model, **model_options(config), "image_size": size, "in_channels": in_channels,
        "num_classes": num_classes, "batch_size": config.batch_size, "precision": precision,
        "channels_last": config.channels_last, "compile": config.compile, "device": str(device),
        "params": description.params, "flops": description.flops,
        "train_images_per_s": config.batch_size / train_s, "train_step_ms": 1e3 * train_s,
        "infer_images_per_s": config.batch_size / infer_s, "infer_step_ms": 1e3 * infer_s,
        "warmup_s": warmup_s, "peak_memory_bytes": memory, "peak_memory_kind": memory_kind,
    }


def model_options(config: RunConfig) -> dict[str, Any]:
    return {k: v for k, v in config.model_options.items() if k != "init"}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(step: Callable[[], None], count: int, device: torch.device) -> list[float]:
    """Seconds of each of `count` calls of `step`.

    On CUDA, events recorded between the steps time them without a host sync inside the loop (a
    sync per step would leave the GPU idle while the next step is launched); the device is
    synchronised before the first step and before the events are read.
    """
    synchronize(device)
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(count + 1)]
        events[0].record()
        for event in events[1:]:
            step()
            event.record()
        synchronize(device)
        return [start.elapsed_time(end) / 1e3 for start, end in itertools.pairwise(events)]
    times, last = [], time.perf_counter()
    for _ in range(count):
        step()
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated, this row"
    # ru_maxrss never goes down: a grid's later rows include the earlier ones and the data of the process.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss * (1 if sys.platform == "darwin" else 1024), "peak RSS of the whole process so far"


# --- model FLOP utilisation ----------------------------------------------------------------------


def datasheet_peak(device_name: str) -> float | None:
    """The datasheet's dense bf16 FLOP/s of a GPU by its name, or None when it is not in the table."""
    for pattern, tflops in DATASHEET_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops * 1e12
    return None


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 8192, repeats: int = 20) -> float:
    """FLOP/s of an n x n matmul in `dtype` on `device`: the practical peak a model could reach."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    seconds = sum(step_times(lambda: a @ b, repeats, device))
    return 2 * n**3 * repeats / seconds


def device_peaks(device: torch.device, precision: str, n: int) -> dict[str, float | None]:
    measured = matmul_rate(device, DTYPES[precision], n)
    torch.cuda.empty_cache()
    name = provenance.device_name(device)
    return {"device_name": name, "datasheet_bf16_flops": datasheet_peak(name), "matmul_flops": measured}


def mfu(forward_flops: int, batch_size: int, step_seconds: float, peak_flops: float | None) -> float | None:
    """Model FLOP utilisation of a train step: 3x the forward FLOPs per image, over the peak."""
    if peak_flops is None:
        return None
    return TRAIN_FLOPS_PER_FORWARD * forward_flops * batch_size / step_seconds / peak_flops


def utilisation(row: dict, peaks: dict | None) -> dict:
    """The MFU columns of a step-grid row (None off CUDA, where no peak is measured)."""
    peaks = peaks or {}
    step_s = row["train_step_ms"] / 1e3
    return {
        "train_flops_per_s": TRAIN_FLOPS_PER_FORWARD * row["flops"] * row["batch_size"] / step_s,
        "mfu_datasheet_bf16": mfu(row["flops"], row["batch_size"], step_s, peaks.get("datasheet_bf16_flops")),
        "mfu_matmul": mfu(row["flops"], row["batch_size"], step_s, peaks.get("matmul_flops")),
    }


# --- end to end ----------------------------------------------------------------------------------


def end_to_end(config: RunConfig, workers: int, data_dir: str | None) -> tuple[list[dict], dict]:
    """bench.train's Engine vs the tutorials' loop, an epoch of each in turn, `config.epochs` times."""
    engine = Engine(config, data_dir)
    tutorial = TutorialLoop(engine, workers)
    loops = {
        "bench.train": lambda epoch, on_batch: engine.train_epoch(epoch, [], on_batch),
        "tutorial": lambda epoch, on_batch: tutorial.train_epoch(on_batch),
    }
    rows = []
    with progress.RunProgress(label="end-to-end", epochs=2 * config.epochs) as bar:
        for epoch in range(1, config.epochs + 1):
            for name, train_epoch in loops.items():
                began = time.perf_counter()
                loss, acc, seen = train_epoch(epoch, bar.batch_done)  # both read the loss back: synchronised
                seconds = time.perf_counter() - began
                rows.append({"epoch": epoch, "loop": name, "images": seen, "seconds": seconds,
                             "images_per_s": seen / seconds, "train_loss": loss, "train_acc": acc})
                bar.progress.update(bar.epochs, advance=1, info=f"{name} {seen / seconds:.0f} img/s")
    speed = {name: statistics.median(r["images_per_s"] for r in rows if r["loop"] == name) for name in loops}
    summary = {
        "config": config.to_dict(),
        "steps_per_epoch": len(tutorial.loader),
        "loader_workers": workers,
        "torch_threads": torch.get_num_threads(),
        "bench_images_per_s": speed["bench.train"],
        "tutorial_images_per_s": speed["tutorial"],
        "ratio": speed["bench.train"] / speed["tutorial"],
        "bench_val_acc": engine.evaluate("val")[1],
        "tutorial_val_acc": engine.evaluate("val", tutorial.model)[1],
    }
    return rows, summary


# --- time to accuracy ----------------------------------------------------------------------------


class _Reached(Exception):
    """Raised from fit's on_epoch to stop training once the target accuracy is reached."""


def until(config: RunConfig, target: float, data_dir: str | None) -> tuple[list[dict], dict]:
    rows: list[dict] = []
    began = time.perf_counter()

    def on_epoch(stats) -> None:
        bar.epoch_done(stats)
        rows.append({"epoch": stats.epoch, "val_acc": stats.val_acc, "train_seconds": stats.seconds,
                     "seconds_since_start": time.perf_counter() - began, "images_per_s": stats.images_per_s})
        if stats.val_acc >= target:
            raise _Reached

    with progress.RunProgress(label=f"until val acc {target}", epochs=config.epochs) as bar:
        with contextlib.suppress(_Reached):
            fit(config, on_epoch=on_epoch, on_batch=bar.batch_done, data_dir=data_dir)
    reached = bool(rows) and rows[-1]["val_acc"] >= target
    return rows, {
        "config": config.to_dict(),
        "target": target,
        "reached": reached,
        "epochs": len(rows),
        # From the call of fit (data loading and model building included) to the end of the epoch that got there.
        "seconds": rows[-1]["seconds_since_start"] if rows else None,
        "train_seconds": sum(r["train_seconds"] for r in rows),  # the epochs' training only, evaluation excluded
        "best_val_acc": max((r["val_acc"] for r in rows), default=None),
    }


# --- tracking overhead ---------------------------------------------------------------------------


def tracking_overhead(study_name: str, repeats: int, data_dir: str | None) -> tuple[list[dict], dict, torch.device]:
    """Seconds per run that bench.ablation (MLflow + Optuna) adds to bench.train.fit of the same configs.

    Each repeat runs the study's smoke budget twice in a fresh temporary folder: bare (fit alone,
    with the same per-epoch checkpoints the runner writes) and tracked (bench.ablation's main,
    quiet). The MLflow store is created before the tracked pass is timed: it is made once per
    machine, not per run. The first config is trained once untimed so neither pass pays warm-up.
    """
    from bench import ablation, studies  # here, not at the top: importing MLflow costs seconds
    from bench.tracking import Tracker

    points = studies.load(study_name).grid("smoke")
    data_flags = ["--data-dir", data_dir] if data_dir else []
    rows = []
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        fit(points[0].config, data_dir=data_dir)
        bar = progress.make_progress()
        with bar:
            task = bar.add_task(f"{study_name} smoke, bare and tracked", total=2 * repeats, info="")
            for repeat in range(1, repeats + 1):
                folder = Path(f"repeat-{repeat}")
                folder.mkdir()
                with contextlib.chdir(folder):
                    began = time.perf_counter()
                    for point in points:
                        fit(point.config, checkpoint_dir=Path("bare") / point.config.hash, data_dir=data_dir)
                    bare = time.perf_counter() - began
                    bar.advance(task)
                    store_began = time.perf_counter()
                    Tracker("sqlite:///mlflow.db")
                    store = time.perf_counter() - store_began
                    began = time.perf_counter()
                    code = ablation.main(["--study", study_name, "--budget", "smoke", "--quiet",
                                          "--tracking-uri", "sqlite:///mlflow.db",
                                          "--storage", ".bench/optuna.journal", *data_flags])
                    tracked = time.perf_counter() - began
                    bar.advance(task)
                if code != 0:
                    raise BenchError(f"the tracked smoke run of study {study_name!r} did not finish; "
                                     f"run python -m bench.ablation --study {study_name} --budget smoke to see why")
                rows.append({"repeat": repeat, "runs": len(points), "bare_s": bare, "tracked_s": tracked,
                             "store_creation_s": store, "overhead_per_run_s": (tracked - bare) / len(points)})
    summary = {
        "study": study_name,
        "budget": "smoke",
        "runs": len(points),
        "overhead_per_run_s": statistics.median(r["overhead_per_run_s"] for r in rows),
        "target_s": 2.0,
    }
    return rows, summary, resolve_device(points[0].config.device)


# --- output --------------------------------------------------------------------------------------


def report(kind: str, rows: list[dict], summary: dict, device: torch.device, argv: list[str], args) -> None:
    """The rich table (stdout, or stderr under --json), JSON on stdout, CSV rows; all with provenance."""
    stamp = {"command": "python -m bench.benchmark " + shlex.join(argv),
             "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             **provenance.stamp(device)}
    table = TABLES[kind](rows, summary)
    table.caption = "\n".join(filter(None, [table.caption, " · ".join(f"{k} {v}" for k, v in stamp.items())]))
    stream = sys.stderr if args.json else sys.stdout
    # A file or pipe gets the whole table rather than one wrapped to 80 columns.
    Console(stderr=args.json, width=None if stream.isatty() else 200).print(table)
    if args.json:
        print(json.dumps({"kind": kind, **stamp, **summary, "rows": rows}, indent=1))
    if args.csv:
        pd.DataFrame([{**row, **stamp} for row in rows]).to_csv(args.csv, index=False)


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def steps_table(rows: list[dict], summary: dict) -> Table:
    table = Table(title=f"train and inference steps (median of {summary['steps']} after {summary['warmup']} warm-up)")
    for column in ("model", "options", "image", "batch", "precision", "channels_last", "compile", "params",
                   "MFLOPs/img", "train img/s", "step ms", "infer img/s", "peak MiB", "MFU datasheet", "MFU matmul"):
        table.add_column(column, justify="left" if column in ("model", "options") else "right")
    for r in rows:
        options = " ".join(f"{k}={v}" for k, v in r.items() if k in ("batch_norm", "head", "width", "dropout"))
        table.add_row(
            r["model"], options, f"{r['in_channels']}x{r['image_size']}", str(r["batch_size"]), r["precision"],
            str(r["channels_last"]), str(r["compile"]), f"{r['params']:,}", _num(r["flops"] / 1e6, 1),
            _num(r["train_images_per_s"]), _num(r["train_step_ms"], 1), _num(r["infer_images_per_s"]),
            _num(r["peak_memory_bytes"] / 2**20), _percent(r["mfu_datasheet_bf16"]), _percent(r["mfu_matmul"]),
        )
    notes = [f"peaks on {peak['device_name']}: {peak['precision']} matmul {peak['matmul_flops'] / 1e12:.0f} TFLOP/s, "
             "datasheet bf16 dense " + ("not in the table" if peak["datasheet_bf16_flops"] is None
                                        else f"{peak['datasheet_bf16_flops'] / 1e12:.0f} TFLOP/s")
             for peak in summary["peaks"]]
    if any(r["device"] == "cpu" for r in rows):
        notes.append("on CPU: peak memory is the process's peak RSS so far; MFU is measured on CUDA only")
    table.caption = "\n".join(notes)
    return table


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def end_to_end_table(rows: list[dict], summary: dict) -> Table:
    config = summary["config"]
    table = Table(title=f"end to end: {config['model']} width {config['width']} BN {config['batch_norm']} on "
                        f"{config['dataset']}, batch {config['batch_size']}, {summary['steps_per_epoch']} steps an epoch")
    for column in ("epoch", "loop", "seconds", "images/s", "train loss", "train acc"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    for r in rows:
        table.add_row(str(r["epoch"]), r["loop"], _num(r["seconds"], 1), _num(r["images_per_s"]),
                      _num(r["train_loss"], 3), _num(r["train_acc"], 3))
    table.add_section()
    table.add_row("median", "bench.train", "", _num(summary["bench_images_per_s"]), "",
                  f"val {summary['bench_val_acc']:.3f}")
    table.add_row("median", f"tutorial ({summary['loader_workers']} workers)", "",
                  _num(summary["tutorial_images_per_s"]), "", f"val {summary['tutorial_val_acc']:.3f}")
    table.add_row("ratio", "bench.train / tutorial", "", f"{summary['ratio']:.2f}x", "", "")
    return table


def until_table(rows: list[dict], summary: dict) -> Table:
    outcome = (f"reached in {summary['epochs']} epochs, {summary['seconds']:.1f} s" if summary["reached"]
               else f"not reached in {summary['epochs']} epochs (best {_num(summary['best_val_acc'], 4)})")
    table = Table(title=f"time to val acc {summary['target']}: {outcome}")
    for column in ("epoch", "val acc", "train s", "s since start", "images/s"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["epoch"]), f"{r['val_acc']:.4f}", _num(r["train_seconds"], 1),
                      _num(r["seconds_since_start"], 1), _num(r["images_per_s"]))
    return table


def overhead_table(rows: list[dict], summary: dict) -> Table:
    table = Table(title=f"tracking overhead: study {summary['study']} smoke, {summary['runs']} runs a pass; "
                        f"median {summary['overhead_per_run_s']:.2f} s a run (target <= {summary['target_s']:.0f} s)")
    for column in ("repeat", "bare s", "tracked s", "overhead s/run", "store creation s (excluded)"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["repeat"]), _num(r["bare_s"], 2), _num(r["tracked_s"], 2),
                      _num(r["overhead_per_run_s"], 2), _num(r["store_creation_s"], 2))
    return table


TABLES = {"steps": steps_table, "end-to-end": end_to_end_table, "until": until_table,
          "tracking-overhead": overhead_table}


if __name__ == "__main__":
    cli(main)
