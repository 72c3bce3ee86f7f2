"""What a study's budget will cost on a GPU, from first epochs the GPU suite measured (bench.benchmark.budgets).

`full_budget_configs` names the distinct run configs of the studies' `full` budgets (each one
first epoch to measure); `study_estimate` turns measured first epochs into a budget's hours on one
worker, `estimates` for every study's `full` budget; `packed_estimate` gives a `gpu` budget's
minutes packed on one H100, from the newest suite run committed in results/ (what --list and a gpu
study's opening line show). Nothing here trains or measures.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from bench.config import LATER_SETTINGS, RunConfig
from bench.engine.train import flops_per_image
from bench.provenance import PROJECT_ROOT
from bench.run import studies

CARRIED = "fashion-mnist"  # the data the GPU machines get: first epochs are measured on it
# Official training-set sizes: the estimate scales the measured epoch to the study's dataset.
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "fashion-mnist": 60_000, "mnist": 60_000}
# Settings that change neither the work of a step nor its speed, so configs differing only in them share a measurement.
NOT_SPEED = (
    "dataset",
    "seed",
    "init",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "step_epochs",
    "patience",
    "label_smoothing",
    "epochs",
    "subset",
    "val_fraction",
    "split_seed",
    "budget",
    "dropout",
    "optimizer",
    "backbone_lr_scale",
    "pretrained",
    "compute",
    "compute_scale",
)
RESULTS = PROJECT_ROOT / "results"  # where the GPU suite's reference runs are committed
GPU_BUDGET = "gpu"  # the budgets sized for one packed GPU: listed and announced with their estimate
# An H100 (SXM) against the GPU the first epochs were measured on: the ratio of their memory bandwidth
# (3.35 TB/s against the H200's 4.8), an assumption: a packed 32 px study is bound by the GPU, not the host.
H100_SPEED = {"H100": 1.0, "H200": 0.7}
PACKING_TARGET = 3.0  # a 32 px study packed on one GPU: runs per hour over one worker's (the GPU suite's target)
_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}


# --- full budgets: configs and estimates from measured first epochs --------------------------------


def speed_key(config: RunConfig) -> str:
    """The settings that decide a step's cost: runs that share them share one measured epoch. As in the run
    hash, a setting added later counts only off its default, so epochs measured before it existed still
    match (`normal_key` reads keys written with every setting)."""
    return ",".join(
        f"{k}={v}" for k, v in sorted(config.to_dict().items()) if k not in NOT_SPEED and not _later_default(k, str(v))
    )


def normal_key(key: str) -> str:
    """A measured epoch's key (as any version of the suite wrote it) as `speed_key` writes it today."""
    pairs: list[list[str]] = []
    for part in key.split(","):  # a value may hold commas itself ('train_scale=256,512')
        if "=" in part:
            pairs.append(part.split("=", 1))
        else:
            pairs[-1][1] += f",{part}"
    return ",".join(f"{k}={v}" for k, v in pairs if not _later_default(k, v))


def _later_default(name: str, value: str) -> bool:
    return name in LATER_SETTINGS and value == str(_DEFAULTS[name])


def full_budget_configs(names: list[str], data_dir: str | None) -> dict[str, dict]:
    """Each distinct speed config of the studies' full budgets: a representative config and who uses it.

    Only configs on a dataset of known size: an image folder's epoch cannot be scaled from Fashion-MNIST's.
    """
    found: dict[str, dict] = {}
    for name in names:
        study = studies.load(name)
        if "full" not in study.budgets:
            continue
        for config in _configs(study, data_dir):
            if _train_images(config) is None:
                continue
            entry = found.setdefault(speed_key(config), {"config": config, "studies": []})
            if name not in entry["studies"]:
                entry["studies"].append(name)
    return found


def _configs(study: studies.Study, data_dir: str | None, budget: str = "full") -> list[RunConfig]:
    if study.variants:
        # An equal-compute study sets each run's steps by its model's FLOPs per image, counted here on
        # the carried data's shapes (the study's own dataset is not at hand: 1 input channel instead
        # of CIFAR's 3 changes only the first conv's FLOPs, under 2 % of a VGG's).
        return [
            p.config
            for p in study.grid(
                budget, flops_per_image=lambda config: flops_per_image(config.replace(dataset=CARRIED), data_dir)
            )
        ]
    settings, label = study.settings(budget)
    return [RunConfig.from_dict({**settings, "budget": label})]  # a search: its fixed settings


def estimates(names: list[str], measured: dict[str, dict], data_dir: str | None) -> list[dict]:
    """Each study's full budget in hours (study_estimate), for the studies that have one."""
    loaded = [studies.load(name) for name in names]
    return [study_estimate(study, "full", measured, data_dir) for study in loaded if "full" in study.budgets]


def study_estimate(study: studies.Study, budget: str, measured: dict[str, dict], data_dir: str | None) -> dict:
    """A study's budget in hours on one worker: every run's epochs at the measured speed of its config.

    A run of E epochs (E scaled under equal compute) costs its first epoch (as measured, scaled to
    the dataset's size) plus E-1 epochs at the steady rate, plus a validation pass per epoch. A
    search counts every trial to the end (pruning only shortens it).
    """
    name = study.name
    configs = _configs(study, data_dir, budget)
    runs = len(configs)
    note = ""
    if not study.variants:
        trials = (study.search or {}).get("budgets", {}).get(budget, {}).get("trials")
        if not isinstance(trials, int):
            return {
                "study": name,
                "runs": None,
                "hours": None,
                "note": f"a search without a trial count in its {budget} budget",
            }
        note = f"{trials} trials, each to the end (no pruning counted)"
        configs, runs = configs * trials, trials
    seconds, missing = 0.0, set()
    for config in configs:
        epoch = measured.get(speed_key(config))
        train_images = _train_images(config)
        if epoch is None or train_images is None:
            missing.add(config.dataset if train_images is None else speed_key(config))
            continue
        scale = train_images / epoch["images"]
        val_images = train_images * config.val_fraction / (1 - config.val_fraction)
        val_scale = val_images / max(1, epoch["val_images"])
        epochs = config.train_epochs  # fewer (or more) under equal compute
        steady_s = max(0.0, epochs - 1) * train_images / epoch["steady_images_per_s"]
        seconds += epoch["first_epoch_s"] * scale + steady_s + math.ceil(epochs) * epoch["val_s"] * val_scale
    if missing:
        what = "; ".join(sorted(missing))
        return {
            "study": name,
            "runs": runs,
            "hours": None,
            "note": f"not estimated: no measured epoch or dataset size for {what}",
        }
    return {
        "study": name,
        "runs": runs,
        "epochs": configs[0].epochs,
        "dataset": configs[0].dataset,
        "hours": seconds / 3600,
        "note": note,
    }


def _train_images(config: RunConfig) -> int | None:
    total = TRAIN_IMAGES.get(config.dataset)
    if total is None:
        return None
    pool = min(total, config.subset) if config.subset else total
    return pool - max(1, math.floor(pool * config.val_fraction))


# --- gpu budgets: minutes packed on one H100 ----------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """The GPU suite's newest full run in results/: the first epochs and packing gain estimates use."""

    path: Path
    device: str
    first_epochs: dict[str, dict]
    packing: float | None  # the best runs per hour over one worker's, at 32 px; None: not measured


@functools.cache
def reference(folder: Path = RESULTS) -> Reference | None:
    found = []
    for path in folder.glob("gpu-*.json"):
        results = json.loads(path.read_text())
        full = results.get("kind") == "gpu-suite" and results["plan"]["name"] == "full"
        if full and results["first_epochs"]:
            found.append((results["date"], path, results))
    if not found:
        return None
    _, path, results = max(found, key=lambda item: item[0])
    epochs = {normal_key(key): epoch for key, epoch in results["first_epochs"].items()}
    return Reference(path, results["device"], epochs, packing_gain(results.get("workers")))


def runs_per_hour(shared: dict | None) -> dict[int, float]:
    """Each pass of the suite's study through worker processes: its runs per hour, by worker count."""
    return {p["workers"]: 3600 * len(p["runs"]) / p["wall_s"] for p in (shared or {}).get("passes", [])}


def packing_gain(shared: dict | None) -> float | None:
    """The best runs per hour over one worker's, from the suite's study passes on a gpu budget."""
    if not shared or shared.get("budget") != GPU_BUDGET:
        return None  # older suites shared out a smoke study: its seconds-long runs say nothing of packing
    rates = runs_per_hour(shared)
    return max(rates.values()) / rates[1] if 1 in rates else None


def packed_estimate(study: studies.Study, budget: str, data_dir: str | None = None) -> dict | None:
    """The budget's minutes packed on one H100, and what they rest on; None without a reference run.

    The suite's first epochs (one worker) over the H100's speed relative to the measuring GPU,
    over the packing gain (measured by the suite, else assumed to be its target).
    """
    ref = reference()
    if ref is None:
        return None
    row = study_estimate(study, budget, ref.first_epochs, data_dir)
    speed = next((s for name, s in H100_SPEED.items() if name in ref.device), None)
    if row["hours"] is None or speed is None:
        why = row["note"] or f"no speed factor from {ref.device} to an H100"
        return {**row, "minutes": None, "note": why}
    gain = ref.packing or PACKING_TARGET
    return {
        **row,
        "minutes": 60 * row["hours"] / speed / gain,
        "speed": speed,
        "gain": gain,
        "gain_measured": ref.packing is not None,
        "reference": ref,
    }


def estimate_text(estimate: dict | None, long: bool = False) -> str:
    """'~3.8 min packed on one H100', and with `long` the assumptions behind it."""
    if estimate is None:
        return "no estimate: no GPU suite run in results/"
    if estimate["minutes"] is None:
        return f"no estimate: {estimate['note']}"
    short = f"~{estimate['minutes']:.1f} min packed on one H100"
    if not long:
        return short
    ref = estimate["reference"]
    gain = (
        "measured by the GPU suite"
        if estimate["gain_measured"]
        else "assumed: the GPU suite's target, not yet measured"
    )
    return (
        f"{short}: {estimate['runs']} runs x {estimate['epochs']} epochs at the first-epoch speeds "
        f"measured on {ref.device} ({ref.path.name}), x{estimate['speed']:.2f} for the H100 "
        f"(its memory bandwidth against the measuring GPU's), {estimate['gain']:.1f}x the runs per hour "
        f"of one worker ({gain})"
    )
