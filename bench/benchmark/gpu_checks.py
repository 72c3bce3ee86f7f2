"""The GPU suite's checks before anything runs: where the results go, the carried Fashion-MNIST files,
a CUDA device, and the models asked for (timm's among them, where timm imports)."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.benchmark.gpu_plan import FASHION_FILES, Plan
from bench.device import resolve_device
from bench.errors import BenchError, choices, one_line
from bench.models import names as model_names


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
