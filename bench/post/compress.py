"""The library half of bench.post: a trained model quantised (int8 dynamic, Linear layers), pruned (L1
unstructured, global or per layer) and exported to ONNX (bench.post.onnx_export), each variant saved and
then measured the same way (test accuracy, size on disk and gzipped, CPU time per call in turns)."""

from __future__ import annotations

import copy
import gzip
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.markup import escape
from torch import nn
from torch.nn.utils import prune

from bench.post.latency import BATCHES, Timing, batch_of, time_in_turns
from bench.post.onnx_export import check_onnx, export_onnx
from bench.progress import make_progress
from bench.run.trained import Trained, normalise, test_predictions

PRUNE_SCOPES = ("global", "layer")


@dataclass
class Variant:
    name: str
    test_acc: float | None  # None: could not be run (ONNX without onnxruntime)
    size_bytes: int
    gzip_bytes: int
    sparsity: float | None  # zero fraction of the conv and Linear weights; None where not plain floats
    file: str
    note: str = ""
    timings: dict[int, Timing] = field(default_factory=dict)  # by batch size; none where it cannot run

    def flat(self) -> dict[str, object]:
        """One row of the csv: the timings as columns."""
        row = {k: v for k, v in asdict(self).items() if k != "timings"}
        for batch, t in self.timings.items():
            row.update(
                {
                    f"ms_b{batch}": t.median_ms,
                    f"ms_b{batch}_low": t.low_ms,
                    f"ms_b{batch}_high": t.high_ms,
                    f"images_per_s_b{batch}": t.images_per_s,
                }
            )
        return row


# --- the transformations ------------------------------------------------------------------------


def quantize_linear(model: nn.Module) -> nn.Module:
    """A copy with int8 dynamic quantisation of its Linear layers."""
    with warnings.catch_warnings():  # torch.ao.quantization warns that torchao will replace it
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def prune_weights(model: nn.Module, amount: float, scope: str = "global") -> nn.Module:
    """A copy with the `amount` fraction of smallest-magnitude conv/Linear weights set to zero."""
    pruned = copy.deepcopy(model)
    targets = prunable(pruned)
    if scope == "global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    else:
        for module, name in targets:
            prune.l1_unstructured(module, name, amount=amount)
    for module, name in targets:
        prune.remove(module, name)  # weight = weight_orig * mask, made permanent: a plain model again
    return pruned


def sparsity(model: nn.Module) -> float:
    """The fraction of conv and Linear weights that are exactly zero."""
    weights = [m.weight for m, _ in prunable(model)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def layer_sparsity_range(model: nn.Module) -> tuple[float, float]:
    """The least and most pruned layer's zero fraction (global pruning spreads unevenly)."""
    zeros = [float((m.weight == 0).float().mean()) for m, _ in prunable(model)]
    return min(zeros), max(zeros)


# --- measuring ------------------------------------------------------------------------------------


def file_sizes(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    return len(raw), len(gzip.compress(raw, compresslevel=6))


def accuracy(forward: Callable, trained: Trained) -> float:
    predictions = test_predictions(forward, trained.splits, show_progress=False)
    return int((predictions == trained.splits.labels("test")).sum()) / len(predictions)


def torch_forward(model: nn.Module) -> Callable:
    model.to(memory_format=torch.contiguous_format)  # the layout every format is timed in (bench.post.latency)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return forward


@dataclass
class Built:
    """A variant made and saved, waiting to be measured."""

    name: str
    forward: Callable | None  # None: it cannot run here (ONNX without onnxruntime)
    file: Path
    sparsity: float | None
    note: str


def build_variants(
    trained: Trained,
    out_dir: Path,
    quantize: bool,
    amounts: tuple[float, ...],
    scope: str,
    onnx: bool,
    advance: Callable[[str], None],
) -> list[Built]:
    model = trained.model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)

    def saved(module: nn.Module, name: str) -> Path:
        torch.save(module.state_dict(), out_dir / f"{name}.pt")
        return out_dir / f"{name}.pt"

    advance("fp32: save")
    built = [Built("fp32", torch_forward(model), saved(model, "fp32"), sparsity(model), "the trained model, unchanged")]
    if quantize:
        advance("int8-dynamic: quantise")
        int8 = quantize_linear(model)
        linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
        share = sum(p.numel() for m in linear for p in m.parameters()) / sum(p.numel() for p in model.parameters())
        note = f"{len(linear)} Linear layer(s) holding {share:.1%} of the parameters in int8; the rest fp32"
        built.append(Built("int8-dynamic", torch_forward(int8), saved(int8, "int8-dynamic"), None, note))
    for amount in amounts:
        name = f"pruned-{100 * amount:g}"  # MLflow metric names take no "%"
        advance(f"{name}: prune")
        pruned = prune_weights(model, amount, scope)
        low, high = layer_sparsity_range(pruned)
        note = f"L1 unstructured, {scope}; layers {low:.0%}-{high:.0%} zero; dense storage, no fine-tuning"
        built.append(Built(name, torch_forward(pruned), saved(pruned, name), sparsity(pruned), note))
    if onnx:
        advance("onnx: export and check")
        path = export_onnx(model, trained.splits.input_shape, out_dir / "model.onnx")
        session, note = check_onnx(path, model, normalise(trained.splits, trained.splits.examples(64)))
        forward = None if session is None else (lambda x: session.run(None, {"images": x.numpy()})[0])
        built.append(Built("onnx", forward, path, sparsity(model), note))
    return built


def run_all(
    trained: Trained, out_dir: Path, *, quantize: bool, amounts: tuple[float, ...], scope: str, onnx: bool, repeats: int
) -> list[Variant]:
    """Build every asked-for variant, then measure them all the same way."""
    splits = trained.splits
    count = 1 + quantize + len(amounts) + onnx
    with make_progress() as bar:
        task = bar.add_task("post", total=count + len(BATCHES) + 1 + count, info="")

        def advance(what: str) -> None:
            bar.update(task, advance=1, description=escape(what))

        built = build_variants(trained, out_dir, quantize, amounts, scope, onnx, advance)
        runnable = [b for b in built if b.forward is not None]
        accuracies = {}
        for b in runnable:
            advance(f"{b.name}: test accuracy")
            accuracies[b.name] = accuracy(b.forward, trained)
        timings: dict[str, dict[int, Timing]] = {b.name: {} for b in runnable}
        examples = normalise(splits, splits.examples(max(BATCHES)))
        for batch in BATCHES:
            advance(f"time at batch {batch}, in turns")
            # Fewer calls of a bigger batch: each takes longer and varies less.
            rounds = repeats if batch == 1 else max(10, repeats // 5)
            measured = time_in_turns(
                [b.forward for b in runnable], batch_of(examples, batch), rounds, warmup=max(3, rounds // 10)
            )
            for b, timing in zip(runnable, measured):
                timings[b.name][batch] = timing
        bar.update(task, completed=count + len(BATCHES) + 1 + len(built))
    return [
        Variant(
            b.name,
            accuracies.get(b.name),
            *file_sizes(b.file),
            b.sparsity,
            str(b.file),
            b.note,
            timings.get(b.name, {}),
        )
        for b in built
    ]
