"""The command line of python -m bench.benchmark: flags, checks, and which mode runs."""

from __future__ import annotations

import argparse
import itertools
import sys

from bench import out_folder
from bench.benchmark import gpu
from bench.benchmark.end_to_end import END_TO_END_EPOCHS, end_to_end
from bench.benchmark.output import report
from bench.benchmark.steps import check_buildable, step_grid
from bench.benchmark.time_to_accuracy import until
from bench.cli import add_config_flags, given_settings
from bench.config import RunConfig
from bench.device import resolve_device
from bench.errors import BenchError, Parser

# Run settings that take comma-separated lists, expanded to their cartesian product.
GRID = ("model", "batch_size", "precision", "channels_last", "compile", "image_size")
BOOL_GRID = ("channels_last", "compile")


def parser() -> argparse.ArgumentParser:
    import bench.benchmark

    p = Parser(
        prog="python -m bench.benchmark",
        description=bench.benchmark.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = p.add_mutually_exclusive_group()
    modes.add_argument(
        "--end-to-end",
        action="store_true",
        help="bench.train epochs vs the tutorials' DataLoader loop, alternately (--epochs each, default 3)",
    )
    modes.add_argument("--until", type=float, metavar="ACC", help="train the recipe until validation accuracy >= ACC")
    modes.add_argument(
        "--tracking-overhead",
        action="store_true",
        help="seconds MLflow + Optuna add to each run of a study's smoke budget",
    )
    modes.add_argument("--suite", choices=["gpu"], help="gpu: every GPU measurement and target in one run (see above)")
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
    grid.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="step grid: measure the grid this many times, its points in alternating order; 6 or more give "
        "each pair of points a speed ratio with a 95%% interval (default 1)",
    )
    grid.add_argument("--matmul-size", type=int, default=8192, help="CUDA: n of the n x n matmul peak (default 8192)")
    p.add_argument(
        "--loader-workers",
        type=int,
        default=2,
        help="--end-to-end, --suite: the tutorial DataLoader's workers (default 2, as the tutorials)",
    )
    p.add_argument("--study", default="depth", help="--tracking-overhead: whose smoke budget (default depth)")
    p.add_argument("--repeats", type=int, default=2, help="--tracking-overhead: bare/tracked pairs (default 2)")
    p.add_argument("--data-dir", help="where dataset files are (default: $BENCH_DATA, system location, download)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout (the table goes to stderr)")
    p.add_argument("--csv", metavar="PATH", help="also write the table's rows, with provenance, to PATH")
    suite = p.add_argument_group("--suite gpu (--model: our models to measure; --device: where)")
    suite.add_argument("--out", metavar="DIR", help="where gpu-<device>.md/.json go (results to commit them)")
    suite.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks the code paths")
    suite.add_argument(
        "--timm-models", metavar="A,B", help="timm's models to set beside ours (default vgg16,vgg16_bn,resnet18)"
    )
    suite.add_argument(
        "--time-limit",
        type=float,
        metavar="S",
        help="start nothing that would end past S seconds (default 520; the smoke run 600)",
    )
    recipe = p.add_argument_group("run settings (model options for every mode; the rest for --end-to-end/--until)")
    # --loader-workers above serves both loops of a comparison (the tutorials' and a streamed run's).
    add_config_flags(recipe, defaults=False, exclude=(*GRID, "loader_workers"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    for name, least in (
        ("steps", 1),
        ("warmup", 0),
        ("rounds", 1),
        ("repeats", 1),
        ("loader_workers", 0),
        ("matmul_size", 1),
        ("time_limit", 1),
    ):
        if getattr(args, name) is not None and getattr(args, name) < least:
            raise BenchError(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(args, name)}")
    if args.until is not None and not 0 < args.until <= 1:
        raise BenchError(f"--until is a validation accuracy in (0, 1], got {args.until}")
    if args.suite:
        if args.out:
            out_folder.check(args.out, "--out")
        return gpu.run_suite(args, argv)
    if args.smoke or args.out or args.timm_models or args.time_limit:
        raise BenchError("--smoke, --out, --timm-models and --time-limit belong to --suite gpu")
    configs = expand_grid(args)
    if args.tracking_overhead:
        from bench.benchmark.tracking_overhead import (
            tracking_overhead,  # MLflow and Optuna: only this mode
        )

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


def expand_grid(args: argparse.Namespace) -> list[RunConfig]:
    """One RunConfig per point of the cartesian product of the GRID settings' comma-separated values."""
    shared = {k: v for k, v in given_settings(args).items() if k not in GRID}
    axes = [[v.strip() for v in getattr(args, name).split(",")] if getattr(args, name) else [None] for name in GRID]
    configs = []
    for values in itertools.product(*axes):
        chosen = {name: value for name, value in zip(GRID, values) if value is not None}
        configs.append(RunConfig.from_dict({**shared, **chosen}))
    return configs
