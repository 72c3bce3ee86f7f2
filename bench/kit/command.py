"""The device kit: bring the studies' stack and data to an air-gapped GPU machine, and results back.

    python -m bench.kit build [--python 3.12] [--out kit] [--image FREEZE]       # here, with a network
    python3 -m bench.kit run --out OUT ablation --study depth --budget gpu       # there, offline

`build` writes kit/ (git-ignored): the Fashion-MNIST files and a wheelhouse for that Python on
manylinux x86_64 of what the studies need beyond the GPU image. `run` installs it offline and runs one
bench command inside OUT, which ends up holding the MLflow store without checkpoints, the Optuna journal
and the reports. This module imports nothing but the standard library until `build` is chosen.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import Parser
from bench.kit import manifest as kit_manifest
from bench.kit import run as kit_run


def parser() -> Parser:
    top = Parser(prog="python -m bench.kit", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="action", required=True)
    build = commands.add_parser("build", help="write the kit folder (needs the package index)")
    build.add_argument("--python", default="3.12", help="the GPU machine's CPython version (default 3.12)")
    build.add_argument(
        "--out", default="kit", help="the kit folder (default kit), replaced whole when the new one is complete"
    )
    build.add_argument(
        "--data", help="folder holding the four Fashion-MNIST .gz files (default /usr/share/datasets/fashion-mnist)"
    )
    build.add_argument(
        "--image",
        help="the GPU image's `python3 -m pip freeze` saved to a file: its "
        "packages stay out of the kit and pin the resolution (default: this machine's "
        "versions of torch, torchvision, timm, pandas, rich, scipy, matplotlib and what "
        "they need)",
    )
    run = commands.add_parser("run", help="install the kit offline and run one bench command inside --out")
    run.add_argument("--kit", default="kit", help="the kit folder (default kit)")
    run.add_argument("--out", required=True, help="the folder to bring back: MLflow store, journal, reports")
    run.add_argument(
        "--time-limit",
        type=float,
        help="stop the command after S seconds (its runs end KILLED and resume when run again)",
    )
    run.add_argument("--keep", help="where checkpoints go (default under $BENCH_CACHE/kit-checkpoints)")
    run.add_argument(
        "job",
        nargs=argparse.REMAINDER,
        metavar="COMMAND ...",
        help=f"a bench command and its flags; one of {', '.join(kit_run.COMMANDS)}",
    )
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.action == "run":
        job = args.job[1:] if args.job[:1] == ["--"] else args.job
        return kit_run.run(Path(args.kit), Path(args.out), job, args.time_limit, Path(args.keep) if args.keep else None)
    from bench.kit import build as kit_build

    out = Path(args.out)
    manifest = kit_build.build(
        out, args.python, Path(args.data) if args.data else None, Path(args.image) if args.image else None
    )
    wheels = sum((out / kit_manifest.WHEELS / w["file"]).stat().st_size for w in manifest["wheels"]) / 2**20
    total = kit_build.size_mib(out)
    print(
        f"{out}: {total:.1f} MiB: {len(manifest['wheels'])} wheels ({wheels:.1f} MiB) for CPython "
        f"{args.python} manylinux x86_64, Fashion-MNIST ({total - wheels:.1f} MiB)",
        file=sys.stderr,
    )
    if total > kit_build.CARRY_LIMIT_MIB:
        print(
            f"note: over {kit_build.CARRY_LIMIT_MIB} MiB, more than many GPU machines take along with the working tree",
            file=sys.stderr,
        )
    for wheel in manifest["wheels"]:
        print(f"{wheel['name']:<36} {wheel['version']:<16} {wheel['file']}")
    return 0
