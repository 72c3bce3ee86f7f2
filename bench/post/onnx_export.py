"""ONNX export of a trained model, and the check that onnxruntime answers as PyTorch does (bench.post).

torch.onnx.export (the TorchScript exporter; the dynamo one needs onnxscript) with a dynamic batch
axis. Adaptive pooling that the exporter cannot express (the paper/light heads' 1x1 -> 7x7 at
32 px) is exported as the equivalent fixed matrix products.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from bench.errors import BenchError, one_line

ONNX_ATOL = 1e-4  # fp32 kernels of two engines differ in summation order, not more


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """The model as ONNX with a dynamic batch axis (input 'images', output 'logits')."""
    exportable = fixed_size_pools(model, input_shape)
    try:
        with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
            warnings.simplefilter("ignore")
            torch.onnx.export(
                exportable,
                (torch.zeros(1, *input_shape),),
                str(path),
                dynamo=False,
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            )
    except Exception as exc:  # an operator the exporter cannot express: say which, in one line
        raise BenchError(f"ONNX export of {type(model).__name__} failed: {one_line(exc)}") from None
    return path


class AdaptivePoolAsMatmul(nn.Module):
    """AdaptiveAvgPool2d for one input size, as two matrix products with the bins' averaging weights.

    The TorchScript exporter cannot express adaptive pooling whose output size does not divide the
    input's, which is what the paper and light heads do at 32 px (a 1x1 map pooled to 7x7). The
    image size is fixed in an export (only the batch is dynamic), so the pooling is a fixed linear map.
    """

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", self.bins(in_size[0], out_size[0]))
        self.register_buffer("cols", self.bins(in_size[1], out_size[1]))

    @staticmethod
    def bins(size: int, out: int) -> torch.Tensor:
        weights = torch.zeros(out, size)
        for i in range(out):  # torch's bin i spans [floor(i*size/out), ceil((i+1)*size/out))
            start, end = (i * size) // out, -((-(i + 1) * size) // out)
            weights[i, start:end] = 1.0 / (end - start)
        return weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows @ x @ self.cols.T


def fixed_size_pools(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """A copy of `model` with each AdaptiveAvgPool2d that the exporter refuses made a fixed matmul."""
    pools = {name: m for name, m in model.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)}
    seen: dict[str, tuple[int, int]] = {}  # each pool's input map size, from one forward pass

    def recorder(name: str):
        def record(module, args, output) -> None:  # returning nothing keeps the output as it is
            seen[name] = tuple(args[0].shape[-2:])

        return record

    hooks = [pool.register_forward_hook(recorder(name)) for name, pool in pools.items()]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    exportable = copy.deepcopy(model)
    for name, pool in pools.items():
        out = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size,) * 2
        in_size = seen[name]
        out = tuple(i if o is None else o for o, i in zip(out, in_size))
        if all(i % o == 0 for i, o in zip(in_size, out)):
            continue  # the exporter turns these into plain average pooling
        parent_name, _, child = name.rpartition(".")
        setattr(exportable.get_submodule(parent_name), child, AdaptivePoolAsMatmul(in_size, out))
    return exportable


def check_onnx(path: Path, model: nn.Module, sample: torch.Tensor):
    """Validate the exported file: (an onnxruntime session or None, a note saying how it was checked
    and, when onnxruntime ran it, how far its logits are from PyTorch's on `sample`)."""
    try:
        import onnx
    except ImportError:
        onnx = None
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    if onnx is None and onnxruntime is None:
        raise BenchError("checking an ONNX export needs onnx or onnxruntime: pip install 'vgg-bench[export]'")
    if onnx is not None:
        onnx.checker.check_model(str(path), full_check=True)
    if onnxruntime is None:
        return None, "onnx.checker passed; onnxruntime not installed, so not run or timed"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same cores PyTorch gets
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = model(sample).numpy()
    difference = float(abs(session.run(None, {"images": sample.numpy()})[0] - expected).max())
    checked = "onnx.checker and " if onnx is not None else ""
    verdict = "matches" if difference <= ONNX_ATOL else "DIFFERS FROM"
    return session, f"{checked}onnxruntime: {verdict} PyTorch (max |Δlogit| {difference:.1e})"
