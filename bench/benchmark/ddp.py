"""One run over 1 vs N processes on one machine (torchrun, DDP), in short alternating rounds.

    python -m bench.benchmark.ddp --config-json run.json --rounds 8

Each round trains the run (bench.train --config-json, with --events) three ways, each a fresh
process tree, in alternating order (A B C, C B A, ...) so that a machine whose other work comes and
goes slows all three alike:
  1 process, 1 thread            OMP_NUM_THREADS=1 python -m bench.train
  N processes (DDP), 1 thread    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node N -m bench.train
  1 process, N threads           OMP_NUM_THREADS=N python -m bench.train
The measurement is the last epoch's training images/s (all ranks' images over the epoch's training
seconds, as bench.train logs it). Each way's speed against 1 process with 1 thread is the median of
the rounds' paired ratios with its 95 % interval, beside the machine's load (bench.speed_ratio);
where the interval reaches 1 the ratio is not measurable here. Prints a Markdown report on stdout.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

from bench.errors import BenchError, Parser, cli
from bench.speed_ratio import in_turns, load, rows_ratio

ONE = "1 process, 1 thread"


def ways(n: int) -> list[tuple[str, int, int]]:
    """(name, processes, threads each) of the three ways to train the run."""
    return [(ONE, 1, 1), (f"{n} processes (DDP, gloo), 1 thread each", n, 1), (f"1 process, {n} threads", 1, n)]


def command(processes: int, config_json: str, events: Path) -> list[str]:
    train = ["-m", "bench.train", "--config-json", config_json, "--events", str(events)]
    if processes == 1:
        return [sys.executable, *train]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), *train]


def train_once(processes: int, threads: int, config_json: str, scratch: Path) -> dict:
    """One run in its own process tree: the last epoch's images/s and the test accuracy."""
    events = scratch / f"events-{processes}x{threads}.jsonl"
    events.unlink(missing_ok=True)
    cmd = command(processes, config_json, events)
    done = subprocess.run(
        cmd, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, cwd=scratch, capture_output=True, text=True
    )
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-1:])
        raise BenchError(f"{shlex.join(cmd)} failed (exit {done.returncode}): {tail}")
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    epochs = [line["epoch"] for line in lines if "epoch" in line]
    result = next(line["result"] for line in lines if "result" in line)
    return {"images_per_s": epochs[-1]["images_per_s"], "epochs": len(epochs), "test_acc": result.get("test_acc")}


def measure(config_json: str, count: int, n: int, run=train_once) -> tuple[list[dict], dict]:
    """`count` rounds of the three ways in alternating order; rows and the ratios against ONE."""
    rows, load_before = [], load()
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as scratch:
        for number in range(1, count + 1):
            for name, processes, threads in in_turns(ways(n), number):
                row = {"round": number, "way": name, **run(processes, threads, config_json, Path(scratch))}
                rows.append(row)
                print(f"round {number}, {name}: {row['images_per_s']:,.0f} images/s", file=sys.stderr)
    loads = [load_before, load()]
    ratios = {name: rows_ratio(rows, "way", name, ONE, loads=loads) for name, _, _ in ways(n) if name != ONE}
    return rows, {"rounds": count, "load_average_1min": loads, "ratios": ratios}


def report(rows: list[dict], summary: dict, argv: list[str], n: int) -> str:
    from bench import provenance

    stamp = provenance.stamp("cpu")
    lines = [
        f"- machine: {stamp['host']}, {os.cpu_count()} CPUs, {stamp['device']}; torch {stamp['torch']}, "
        f"python {stamp['python']}",
        f"- commit: {stamp['commit']}",
        f"- command: `python -m bench.benchmark.ddp {shlex.join(argv)}`",
        f"- load (1-minute average) before: {summary['load_average_1min'][0]:.2f}; "
        f"after: {summary['load_average_1min'][1]:.2f}",
        "",
        "| how | images/s, last epoch (each round) | median | vs 1 process, 1 thread | test acc (median) |",
        "|---|---|---|---|---|",
    ]
    for name, _, _ in ways(n):
        mine = [r for r in rows if r["way"] == name]
        accs = [r["test_acc"] for r in mine if r["test_acc"] is not None]
        verdict = "1.00x" if name == ONE else summary["ratios"][name]["ratio_verdict"]
        each = " / ".join(format(r["images_per_s"], ",.0f") for r in mine)
        acc = format(median(accs), ".4f") if accs else "n/a"
        lines.append(f"| {name} | {each} | {median(r['images_per_s'] for r in mine):,.0f} | {verdict} | {acc} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = Parser(prog="python -m bench.benchmark.ddp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-json", required=True, help="the run's settings (bench.train --config-json)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of the three ways (default 8; 6 or more)")
    parser.add_argument("--processes", type=int, default=2, help="N: DDP processes, and the threads of the third way")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.processes < 2:
        raise BenchError(f"--rounds must be at least 1 and --processes at least 2, got {args.rounds}, {args.processes}")
    if not Path(args.config_json).is_file():
        raise BenchError(f"--config-json {args.config_json}: no such file")
    config_json = str(Path(args.config_json).resolve())
    rows, summary = measure(config_json, args.rounds, args.processes)
    print(report(rows, summary, argv, args.processes), end="")
    return 0


if __name__ == "__main__":
    cli(main)
