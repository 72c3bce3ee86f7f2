"""The GPU report's sections after its targets, each as markdown lines from the suite's results dict: the
step rows, the training step's overhead, the race to accuracy, the packed study and the full budgets."""

from __future__ import annotations

import math
from pathlib import Path

from bench.benchmark.gpu_breakdowns import pct, race_lines, step_lines
from bench.report import markdown as md
from bench.run.budget_estimates import runs_per_hour

# fp32 rows run cuDNN's convolutions in TF32, so their peak is TF32's: half the dense bf16 one on
# Ampere and Hopper datasheets (A100 156 vs 312, H100/H200 SXM 494.7 vs 989.4 TFLOP/s).
TF32_PER_BF16 = 0.5


def steps_section(results: dict) -> list[str]:
    plan = results["plan"]
    small, large = plan["small"], plan["large"]
    lines = [
        "## Train and inference steps",
        "",
        f"Median of {plan['steps']} timed steps after {plan['warmup']} warm-up, on a fixed random batch on the "
        f"device; SGD; width {plan['width']}. `small`: {small[0]} px, batch {small[1]}, the small head, 10 classes; "
        f"`large`: {large[0]} px, batch {large[1]}, the paper's head (FC-4096 x2), {plan['large_classes']} classes. "
        f"The full cross product (12 models x 2 sizes x fp32/bf16 x NCHW/channels_last x eager/compiled) does "
        "not fit the time limit: every model runs at both sizes in bf16 channels_last eager (the engine's "
        f"default); VGG-D-BN at {small[0]} px gets the whole precision x format x compile matrix; vgg-d at "
        f"{large[0]} px and timm's first model are also compiled; fp32 NCHW (the tutorials' setting) comes "
        "last, as time allows. MFU: "
        "3x forward FLOPs per image over a peak of the precision the row's convolutions ran in: "
        "bf16 rows over the datasheet's dense bf16 peak and an n x n bf16 matmul measured in this "
        "run; fp32 rows, whose convolutions cuDNN runs in TF32 (its default), over the datasheet's "
        "dense TF32 peak (half the bf16 one) and a TF32 matmul measured in this run where there is "
        "one (a full-fp32 matmul is no ceiling "
        "for TF32 convolutions: against it they read over 100 %). A batch that ran out of memory was "
        "halved (last column).",
        "",
    ]
    for peak in results.get("peaks", []):
        sheet = peak["datasheet_bf16_flops"]
        lines.append(
            f"- peaks on {peak['device_name']}: {peak['precision']} matmul "
            f"{peak['matmul_flops'] / 1e12:.0f} TFLOP/s; datasheet bf16 dense "
            + ("not in the table" if sheet is None else f"{sheet / 1e12:.0f} TFLOP/s")
        )
    headers = [
        "group",
        "model",
        "size",
        "batch",
        "precision",
        "layout",
        "compile",
        "params M",
        "GFLOPs/img",
        "train img/s",
        "step ms",
        "infer img/s",
        "peak MiB",
        "MFU datasheet",
        "MFU matmul",
        "OOM",
    ]
    body = []
    for r in results["steps"]:
        if "skipped" in r:
            body.append([r["group"], r["label"], r["size"], *[""] * 12, r["skipped"]])
            continue
        body.append(
            [
                r["group"],
                r["label"],
                f"{r['image_size']} px",
                r["batch_size"],
                r["precision"],
                "channels_last" if r["channels_last"] else "NCHW",
                "yes" if r["compile"] else "no",
                f"{r['params'] / 1e6:.1f}",
                f"{r['flops'] / 1e9:.2f}",
                _num(r["train_images_per_s"]),
                _num(r["train_step_ms"], 2),
                _num(r["infer_images_per_s"]),
                _num(r["peak_memory_bytes"] / 2**20),
                *_mfu_cells(r, results.get("peaks", [])),
                "halved from " + ", ".join(map(str, r["out_of_memory_at"])) if r["out_of_memory_at"] else "",
            ]
        )
    return [*lines, "", md.table(headers, body), ""]


def _mfu_cells(row: dict, peaks: list[dict]) -> list[str]:
    """MFU against the datasheet and the measured matmul of the precision the convolutions ran in."""
    if row["precision"] != "fp32":
        return [pct(row["mfu_datasheet_bf16"]), pct(row["mfu_matmul"])]
    datasheet = None if row["mfu_datasheet_bf16"] is None else row["mfu_datasheet_bf16"] / TF32_PER_BF16
    tf32 = next((p["matmul_flops"] for p in peaks if p["precision"] == "tf32"), None)
    measured = "— (no TF32 matmul measured)" if tf32 is None else pct(row["train_flops_per_s"] / tf32)
    return [pct(datasheet) + " (TF32)", measured]


def step_overhead_section(results: dict) -> list[str]:
    measured = results.get("step_overhead")
    if measured is None:
        return []
    config = measured["config"]
    return [
        "## The training step: eager vs CUDA graph, fixed batch vs end to end",
        "",
        f"{config['model']}{'-bn' if config['batch_norm'] else ''} width {config['width']}, "
        f"{config['dataset']}, batch {config['batch_size']}, precision {config['precision']}. Fixed "
        f"batch: the median of {measured['steps']} steps of the engine's step on one batch on the "
        "device; end to end: one whole epoch through the engine (batches augmented on the device, the "
        "lr schedule, the metrics), no progress bar.",
        "",
        *[f"- {line}" for line in step_lines(measured)],
        "",
    ]


def race_section(results: dict, figure: Path | None) -> list[str]:
    race = results.get("race")
    if race is None:
        return []
    config = race["config"]
    lines = [
        f"## Time to {race['target']:.0%} test accuracy: bench.train vs the tutorials' loop",
        "",
        f"VGG-D-BN width {config['width']}, {config['dataset']} (subset {config['subset'] or 'all'}), batch "
        f"{config['batch_size']}, {config['optimizer']} lr {config['lr']} {config['schedule']} over "
        f"{config['epochs']} epochs (warm-up {config['warmup_epochs']}), precision {config['precision']}, "
        f"compile {config['compile']}. Test accuracy after every epoch; seconds are training time (evaluation "
        f"excluded). The tutorial loop ({race['loader_workers']} DataLoader workers, PIL transforms per image, "
        f"NCHW, loss read every step) stops at the target or once past {race['cap_factor']}x bench.train's time.",
        "",
    ]
    for loop in race["loops"]:
        reached = (
            f"reached in {loop['seconds_to_target']:.1f} s (wall with setup and evaluation "
            f"{loop['wall_seconds_to_target']:.1f} s)"
            if loop["seconds_to_target"] is not None
            else f"not reached (stopped by: {loop['stopped_by']}; best {loop['best_test_acc']:.2%})"
        )
        lines.append(f"- {loop['loop']}: {reached}; {loop['epochs']} epochs")
    lines += ["", *[f"- {line}" for line in race_lines(race)], ""]
    headers = ["epoch"] + [f"{loop['loop']} {c}" for loop in race["loops"] for c in ("test acc", "s", "img/s")]
    body = []
    for epoch in range(1, max(loop["epochs"] for loop in race["loops"]) + 1):
        cells = [epoch]
        for loop in race["loops"]:
            row = next((r for r in loop["rows"] if r["epoch"] == epoch), None)
            cells += (
                [f"{row['test_acc']:.4f}", f"{row['train_seconds_total']:.1f}", _num(row["images_per_s"])]
                if row
                else ["", "", ""]
            )
        body.append(cells)
    lines += [md.table(headers, body), ""]
    if figure is not None:
        lines += [f"![test accuracy against training seconds]({figure.name})", ""]
    return lines


def workers_section(results: dict) -> list[str]:
    shared = results.get("workers")
    if shared is None:
        return []
    lines = [
        f"## The {shared['study']} study's {shared.get('budget', 'smoke')} budget through the engine, "
        f"worker processes sharing {shared['device']}",
        "",
        "No tracking (fit only), each pass a fresh pool of spawned processes; "
        f"overrides {shared.get('overrides') or 'none'}. " + packing_line(shared),
        "",
    ]
    body = [
        [
            p["workers"],
            p["processes"],
            len(p["runs"]),
            f"{p['wall_s']:.1f}",
            f"{sum(r['seconds'] for r in p['runs']):.1f}",
            ", ".join(f"{r['variant']} {r['test_acc']:.3f}" for r in p["runs"]),
        ]
        for p in shared["passes"]
    ]
    return [*lines, md.table(["workers", "processes used", "runs", "wall s", "sum of run s", "test acc"], body), ""]


def packing_line(shared: dict) -> str:
    """The passes' runs per hour, each against one worker's."""
    rates = runs_per_hour(shared)
    one = rates.get(1)
    return (
        "Runs per hour: "
        + "; ".join(
            f"{workers} worker{'s' if workers > 1 else ''} {rate:,.0f}" + (f" ({rate / one:.2f}x)" if one else "")
            for workers, rate in rates.items()
        )
        + "."
    )


def estimates_section(results: dict) -> list[str]:
    epochs = results.get("first_epochs") or {}
    if not epochs:
        return []
    lines = [
        "## Full budgets: first epochs measured, studies estimated",
        "",
        "The first epoch of each distinct run config of the studies' `full` budgets, trained on the carried "
        "Fashion-MNIST (1 channel; CIFAR-10's 3 channels change only the first conv), with the budget's own "
        "settings otherwise"
        + (f" and {results['plan']['estimate_overrides']}" if results["plan"]["estimate_overrides"] else "")
        + ". Steady img/s is measured after the first fifth of the epoch.",
        "",
    ]
    body = [
        [
            e["config"]["model"] + ("-bn" if e["config"]["batch_norm"] else ""),
            e["config"]["head"],
            e["config"]["batch_size"],
            ", ".join(e["studies"]),
            f"{e['setup_s']:.1f}",
            f"{e['first_epoch_s']:.1f}",
            _num(e["steady_images_per_s"]),
            f"{e['val_s']:.2f}",
        ]
        for e in epochs.values()
    ]
    lines += [
        md.table(["model", "head", "batch", "studies", "setup s", "first epoch s", "steady img/s", "val pass s"], body),
        "",
    ]
    estimates = results.get("estimates") or []
    if estimates:
        rows = [
            [
                e["study"],
                e.get("runs") or "",
                e.get("dataset", ""),
                e.get("epochs", ""),
                "" if e["hours"] is None else f"{e['hours']:.1f}",
                e["note"],
            ]
            for e in estimates
        ]
        after = any(e.get("estimated_after_the_run") for e in estimates)
        lines += [
            "Each study's full budget on this device (one worker, every run to its last epoch), "
            + (
                "**estimated after the run** from the first epochs above (the JSON marks each one):"
                if after
                else "estimated from the first epochs above:"
            ),
            "",
            md.table(["study", "runs", "dataset", "epochs", "hours", "note"], rows),
            "",
        ]
    return lines


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"
