"""python -m bench.post: shrink and export a trained model, and measure what each step buys.

    python -m bench.post --run RUN_ID --all                  # int8, pruning 30/50/70 %, ONNX
    python -m bench.post --checkpoint best.pt --quantize --prune 0.5 --onnx

Every variant is measured the same way against the unchanged fp32 model: test accuracy on the run's
own test set, size on disk (the saved state_dict, or the .onnx file) and that file gzipped, and
CPU time per call at batch 1 and 32 (bench.post.latency: every format on the same contiguous NCHW
input, the model's weights contiguous too, timed in turns; median with a 95 % interval), with the
same threads for PyTorch and onnxruntime (--threads; default torch's, one per core). On a CPU
shared with other work, batch-1 latency with several threads can jump by orders of magnitude (a
thread waits for a descheduled sibling): measure on a quiet machine, or with --threads 1; a wide
interval says the machine was not quiet.

- int8-dynamic: torch.ao.quantization.quantize_dynamic on the Linear layers only (weights stored
  as int8, activations quantised on the fly). Convolutions stay fp32, so the gain depends on how
  much of the model is Linear: most of it with the paper/light heads, little with the small head.
- pruned-N (N %): L1 unstructured pruning of the conv and Linear weights, ranked all together (the
  default; it kept more accuracy than pruning every layer by the same fraction in our runs) or per
  layer (--prune-scope layer), then prune.remove so the saved model is a plain state_dict. Dense
  storage keeps every zero: the file does not shrink and dense kernels run no faster; the gzipped
  size shows what a sparse or compressed format could save. No fine-tuning after pruning, so the
  accuracy column is pruning's raw cost.
- onnx: bench.post.onnx_export, validated with onnx.checker and, when onnxruntime is installed, by
  comparing its outputs with PyTorch's on test images; accuracy and speed are then onnxruntime's.

With --run, the numbers are logged as metrics of a new MLflow run nested under the source run
(tag bench.role=post), with the summary table and the .onnx file as artifacts; one line says so.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import asdict
from pathlib import Path

import torch
from rich import box
from rich.markup import escape
from rich.table import Table

from bench import out_folder
from bench.errors import BenchError, Parser, redact
from bench.post.compress import PRUNE_SCOPES, Variant, run_all
from bench.post.latency import BATCHES
from bench.progress import console, out
from bench.report import markdown as md
from bench.run.trained import load_trained, tracker_for
from bench.speed_ratio import load

DEFAULT_PRUNE = (0.3, 0.5, 0.7)


def parse_amounts(text: str) -> tuple[float, ...]:
    usage = f"--prune takes fractions of the weights to remove, e.g. 0.3,0.5,0.7; got {text!r}"
    try:
        amounts = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise BenchError(usage) from None
    for amount in amounts:
        if not 0 < amount < 1:
            raise BenchError(
                f"prune amount {amount:g} is outside (0, 1): give the fraction of weights "
                "to remove, e.g. --prune 0.3,0.5,0.7"
            )
    return amounts


# --- reporting ----------------------------------------------------------------------------------

# (markdown header, terminal header): the terminal's are stacked so the table fits 100 columns.
COLUMNS = (
    ("variant", "variant"),
    ("test acc", "test\nacc"),
    ("Δ acc (pp)", "Δ acc\npp"),
    ("size MB", "size\nMB"),
    ("gzip MB", "gzip\nMB"),
    ("x smaller", "size\n÷"),
    ("zeros", "zeros"),
    *[
        column
        for b in BATCHES
        for column in (
            (f"ms b={b} [95% CI]", f"ms/call b={b}\n[95% CI]"),
            (f"x faster b={b} [95% CI]", f"speed × b={b}\n[95% CI]"),
        )
    ],
    (f"img/s b={max(BATCHES)}", f"img/s\nb={max(BATCHES)}"),
)


def rows(variants: list[Variant]) -> list[list[str]]:
    """The table's cells; ratios and differences are against the first variant (fp32)."""
    base = variants[0]

    def cell(value, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    def timing(v: Variant, b: int) -> list[str]:
        if b not in v.timings:
            return ["n/a", "n/a"]
        return [v.timings[b].text(), "1.00" if v is base else speedup(v.timings[b].speedup(base.timings[b]))]

    biggest = max(BATCHES)
    return [
        [
            v.name,
            cell(v.test_acc, ".4f"),
            cell(None if v.test_acc is None else 100 * (v.test_acc - base.test_acc), "+.2f"),
            f"{v.size_bytes / 1e6:.3f}",
            f"{v.gzip_bytes / 1e6:.3f}",
            f"{base.size_bytes / v.size_bytes:.2f}",
            cell(v.sparsity, ".1%"),
            *[text for b in BATCHES for text in timing(v, b)],
            cell(v.timings[biggest].images_per_s if biggest in v.timings else None, ",.0f"),
        ]
        for v in variants
    ]


def speedup(ratio: dict) -> str:
    """The median paired ratio and its interval; `*` where the interval reaches 1x (not measurable)."""
    if ratio["ratio_low"] is None:
        return f"{ratio['ratio']:.2f} *"
    mark = " *" if ratio["ratio_verdict"].startswith("not measurable") else ""
    return f"{ratio['ratio']:.2f} [{ratio['ratio_low']:.2f}, {ratio['ratio_high']:.2f}]{mark}"


def table(variants: list[Variant], title: str) -> Table:
    result = Table(title=escape(title), box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
    for _, header in COLUMNS:
        result.add_column(header, justify="left" if header == "variant" else "right", no_wrap=True)
    for row in rows(variants):
        result.add_row(*map(escape, row))
    return result


def notes(variants: list[Variant]) -> list[str]:
    return [f"{v.name}: {v.note}" for v in variants] + [
        "x faster: the median over rounds of fp32's time over the variant's in the same round, variants "
        "called in alternating order; * not measurable here: the interval reaches 1x (or too few rounds)"
    ]


def markdown(variants: list[Variant], loads: list[float] | None = None) -> str:
    notes_md = [f"- {note}" for note in [*notes(variants), *([load_note(loads)] if loads else [])]]
    return "\n".join([md.table([name for name, _ in COLUMNS], rows(variants)), "", *notes_md]) + "\n"


def load_note(loads: list[float]) -> str:
    return f"load: the 1-minute load average was {loads[0]:.1f} before the measurements and {loads[1]:.1f} after"


def metrics(variants: list[Variant]) -> dict[str, float]:
    base = variants[0]
    values = {}
    for v in variants:
        numbers = {k: x for k, x in asdict(v).items() if isinstance(x, (int, float)) and not isinstance(x, bool)}
        numbers["size_ratio"] = base.size_bytes / v.size_bytes
        if v.test_acc is not None:
            numbers["acc_delta"] = v.test_acc - base.test_acc
        for b, t in v.timings.items():
            ratio = t.speedup(base.timings[b])
            numbers.update(
                {
                    f"ms_b{b}": t.median_ms,
                    f"ms_b{b}_low": t.low_ms,
                    f"ms_b{b}_high": t.high_ms,
                    f"images_per_s_b{b}": t.images_per_s,
                    f"speedup_b{b}": ratio["ratio"],
                    f"speedup_b{b}_low": ratio["ratio_low"],
                    f"speedup_b{b}_high": ratio["ratio_high"],
                }
            )
        values.update({f"{v.name}.{k}": x for k, x in numbers.items() if x is not None})
    return values


def write_summary(variants: list[Variant], out_dir: Path, loads: list[float] | None = None) -> list[Path]:
    md = out_dir / "summary.md"
    md.write_text(markdown(variants, loads))
    table_csv = out_dir / "summary.csv"
    with table_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(variants[0].flat()))
        writer.writeheader()
        writer.writerows(v.flat() for v in variants)
    return [md, table_csv]


# --- command line -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m bench.post", description="Quantise, prune and export a trained model; measure each.")
    p.add_argument("--run", help="a finished MLflow run id (its checkpoints/best.pt is used)")
    p.add_argument("--checkpoint", help="a checkpoint file written by bench.train (best.pt / last.pt)")
    p.add_argument("--quantize", action="store_true", help="int8 dynamic quantisation of the Linear layers")
    p.add_argument("--prune", metavar="AMOUNTS", help="L1-prune these fractions of the weights, e.g. 0.3,0.5,0.7")
    p.add_argument(
        "--prune-scope",
        default="global",
        choices=PRUNE_SCOPES,
        help="rank all conv/Linear weights together (default) or prune each layer by the fraction",
    )
    p.add_argument("--onnx", action="store_true", help="export to ONNX (dynamic batch) and check it")
    p.add_argument("--all", action="store_true", help="--quantize --prune 0.3,0.5,0.7 --onnx")
    p.add_argument(
        "--repeats",
        type=int,
        default=50,
        help="timed batch-1 calls per variant (default 50; a fifth, at least 10, at batch 32)",
    )
    p.add_argument(
        "--threads", type=int, help="CPU threads for PyTorch and onnxruntime (default: torch's, one per core)"
    )
    p.add_argument("--out-dir", help="where the variants are written (default: .bench/post/<run or config hash>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--data-dir", help="where the model's dataset files are (default: $BENCH_DATA, system, download)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    amounts = parse_amounts(args.prune) if args.prune else (DEFAULT_PRUNE if args.all else ())
    quantize, onnx = args.quantize or args.all, args.onnx or args.all
    if not (quantize or amounts or onnx):
        raise BenchError("nothing to do: give --quantize, --prune AMOUNTS, --onnx or --all")
    if args.repeats < 1:
        raise BenchError(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads is not None:
        if args.threads < 1:
            raise BenchError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.out_dir:
        out_folder.check(args.out_dir, "--out-dir")
    tracker = tracker_for(args.run, args.tracking_uri)
    trained = load_trained(run_id=args.run, checkpoint_path=args.checkpoint, tracker=tracker, data_dir=args.data_dir)
    out_dir = Path(args.out_dir) if args.out_dir else Path(".bench", "post", trained.tag)
    threads = torch.get_num_threads()
    console.print(
        f"[bold]{escape(trained.source)}[/]: {trained.config.model} on {trained.config.dataset}, "
        f"{len(trained.splits.labels('test'))} test images; CPU, {threads} threads, "
        f"quantized engine {torch.backends.quantized.engine}"
    )

    derived = None
    if tracker is not None:
        done = [name for name, wanted in (("int8", quantize), ("prune", amounts), ("onnx", onnx)) if wanted]
        derived = tracker.start_derived(
            trained.run_id,
            f"post: {' + '.join(done)}",
            params={
                "quantize": quantize,
                "prune": ",".join(f"{a:g}" for a in amounts) or "none",
                "prune_scope": args.prune_scope if amounts else "none",
                "onnx": onnx,
                "repeats": args.repeats,
                "threads": threads,
                "timed_batches": ",".join(map(str, BATCHES)),
                "layout": "NCHW contiguous",
                "quantized_engine": torch.backends.quantized.engine,
            },
            tags={"config_hash": trained.config.hash, "model": trained.config.model, "dataset": trained.config.dataset},
        )
        console.print(
            f"note: adding nested run {derived} to recorded MLflow run {trained.run_id} "
            f"({escape(redact(tracker.uri))}): its metrics, summary and files",
            soft_wrap=True,
        )
    loads = [load()]
    try:
        variants = run_all(
            trained,
            out_dir,
            quantize=quantize,
            amounts=amounts,
            scope=args.prune_scope,
            onnx=onnx,
            repeats=args.repeats,
        )
        loads.append(load())
        summary = write_summary(variants, out_dir, loads)
        if derived is not None:
            tracker.log_metrics(derived, metrics(variants))
            for path in summary:
                tracker.log_file(derived, path, "post")
            if onnx:
                tracker.log_file(derived, out_dir / "model.onnx", "onnx")
            tracker.set_status(derived, "FINISHED")
    except BaseException:
        if derived is not None:
            tracker.set_status(derived, "FAILED")
        raise
    out.print(table(variants, f"{trained.source}: compression and export on CPU ({threads} threads)"))
    for note in [*notes(variants), load_note(loads)]:
        console.print(f"  {escape(note)}")
    console.print(f"files in {out_dir}" + (f"; logged as run {derived} under run {trained.run_id}" if derived else ""))
    return 0
