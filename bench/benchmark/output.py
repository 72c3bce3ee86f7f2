"""What the modes print: a rich table (stdout, or stderr under --json), JSON, CSV rows; all with provenance."""

from __future__ import annotations

import json
import math
import shlex
import sys
from datetime import UTC, datetime

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from bench import provenance


def stamp(device: torch.device, argv: list[str]) -> dict[str, str]:
    """Who made a result: the exact command, the date, the machine and the commit."""
    return {
        "command": "python -m bench.benchmark " + shlex.join(argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **provenance.stamp(device),
    }


def report(kind: str, rows: list[dict], summary: dict, device: torch.device, argv: list[str], args) -> None:
    """The rich table (stdout, or stderr under --json), JSON on stdout, CSV rows; all with provenance."""
    stamped = stamp(device, argv)
    table = TABLES[kind](rows, summary)
    table.caption = "\n".join(filter(None, [table.caption, " · ".join(f"{k} {v}" for k, v in stamped.items())]))
    stream = sys.stderr if args.json else sys.stdout
    # A file or pipe gets the whole table rather than one wrapped to 80 columns.
    Console(stderr=args.json, width=None if stream.isatty() else 200).print(table)
    if args.json:
        print(json.dumps({"kind": kind, **stamped, **summary, "rows": rows}, indent=1))
    if args.csv:
        pd.DataFrame([{**row, **stamped} for row in rows]).to_csv(args.csv, index=False)


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def steps_table(rows: list[dict], summary: dict) -> Table:
    many = summary.get("rounds", 1) > 1
    table = Table(
        title=f"train and inference steps (median of {summary['steps']} after {summary['warmup']} warm-up"
        + (f"; {summary['rounds']} rounds of the grid, in alternating order)" if many else ")")
    )
    for column in (
        *(("round",) if many else ()),
        "model",
        "options",
        "image",
        "batch",
        "precision",
        "channels_last",
        "compile",
        "params",
        "MFLOPs/img",
        "train img/s",
        "step ms",
        "infer img/s",
        "peak MiB",
        "MFU datasheet",
        "MFU matmul",
    ):
        table.add_column(column, justify="left" if column in ("model", "options") else "right")
    for r in rows:
        options = " ".join(f"{k}={v}" for k, v in r.items() if k in ("batch_norm", "head", "width", "dropout"))
        table.add_row(
            *((str(r["round"]),) if many else ()),
            r["model"],
            options,
            f"{r['in_channels']}x{r['image_size']}",
            str(r["batch_size"]),
            r["precision"],
            str(r["channels_last"]),
            str(r["compile"]),
            f"{r['params']:,}",
            _num(r["flops"] / 1e6, 1),
            _num(r["train_images_per_s"]),
            _num(r["train_step_ms"], 1),
            _num(r["infer_images_per_s"]),
            _num(r["peak_memory_bytes"] / 2**20),
            _percent(r["mfu_datasheet_bf16"]),
            _percent(r["mfu_matmul"]),
        )
    notes = [
        f"peaks on {peak['device_name']}: {peak['precision']} matmul {peak['matmul_flops'] / 1e12:.0f} TFLOP/s, "
        "datasheet bf16 dense "
        + (
            "not in the table"
            if peak["datasheet_bf16_flops"] is None
            else f"{peak['datasheet_bf16_flops'] / 1e12:.0f} TFLOP/s"
        )
        for peak in summary["peaks"]
    ]
    if any(r["device"] == "cpu" for r in rows):
        notes.append("on CPU: peak memory is the process's peak RSS so far; MFU is measured on CUDA only")
    for ratio in summary.get("ratios", []):
        notes += [f"{ratio['label']}, {kind} images/s: {ratio[kind]['ratio_verdict']}" for kind in ("train", "infer")]
    table.caption = "\n".join(notes)
    return table


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def end_to_end_table(rows: list[dict], summary: dict) -> Table:
    config = summary["config"]
    table = Table(
        title=f"end to end: {config['model']} width {config['width']} BN {config['batch_norm']} on "
        f"{config['dataset']}, batch {config['batch_size']}, {summary['steps_per_epoch']} steps an epoch"
    )
    for column in ("epoch", "loop", "seconds", "images/s", "train loss", "train acc"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    for r in rows:
        table.add_row(
            str(r["epoch"]),
            r["loop"],
            _num(r["seconds"], 1),
            _num(r["images_per_s"]),
            _num(r["train_loss"], 3),
            _num(r["train_acc"], 3),
        )
    table.add_section()
    table.add_row(
        "median", "bench.train", "", _num(summary["bench_images_per_s"]), "", f"val {summary['bench_val_acc']:.3f}"
    )
    table.add_row(
        "median",
        f"tutorial ({summary['loader_workers']} workers)",
        "",
        _num(summary["tutorial_images_per_s"]),
        "",
        f"val {summary['tutorial_val_acc']:.3f}",
    )
    table.add_row("ratio", "bench.train / tutorial", "", f"{summary['ratio']:.2f}x", "", "")
    table.caption = (
        f"ratio, the median of the rounds' paired ratios: {summary['ratio_verdict']} "
        f"(load: the 1-minute load average before and after, on {summary['cpu_count']} CPUs)"
    )
    return table


def until_table(rows: list[dict], summary: dict) -> Table:
    outcome = (
        f"reached in {summary['epochs']} epochs, {summary['seconds']:.1f} s"
        if summary["reached"]
        else f"not reached in {summary['epochs']} epochs (best {_num(summary['best_val_acc'], 4)})"
    )
    table = Table(title=f"time to val acc {summary['target']}: {outcome}")
    for column in ("epoch", "val acc", "train s", "s since start", "images/s"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["epoch"]),
            f"{r['val_acc']:.4f}",
            _num(r["train_seconds"], 1),
            _num(r["seconds_since_start"], 1),
            _num(r["images_per_s"]),
        )
    return table


def overhead_table(rows: list[dict], summary: dict) -> Table:
    table = Table(
        title=f"tracking overhead: study {summary['study']} smoke, {summary['runs']} runs a pass; "
        f"median {summary['overhead_per_run_s']:.2f} s a run (target <= {summary['target_s']:.0f} s)"
    )
    for column in ("repeat", "bare s", "tracked s", "overhead s/run", "store creation s (excluded)"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["repeat"]),
            _num(r["bare_s"], 2),
            _num(r["tracked_s"], 2),
            _num(r["overhead_per_run_s"], 2),
            _num(r["store_creation_s"], 2),
        )
    return table


TABLES = {
    "steps": steps_table,
    "end-to-end": end_to_end_table,
    "until": until_table,
    "tracking-overhead": overhead_table,
}
