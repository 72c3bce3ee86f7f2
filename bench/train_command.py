"""python -m bench.train: train one run; under `torchrun --nproc-per-node N -m bench.train ...`,
one run over N processes (bench.launch starts it so, and follows its --events file)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import distributed, progress
from bench.cli import add_config_flags, given_settings
from bench.config import RunConfig
from bench.errors import Parser, cli
from bench.train import fit


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m bench.train", description="Train one model.")
    add_config_flags(p, defaults=False)
    p.add_argument("--config-json", help="the run's settings as a JSON object file (flags override it)")
    p.add_argument("--data-dir", help="where the dataset files are (default: $BENCH_DATA, system, download)")
    p.add_argument("--checkpoint-dir", help="write per-epoch checkpoints here and resume from them")
    p.add_argument("--dist-backend", default="auto", choices=distributed.BACKENDS,
                   help="under torchrun: nccl on GPUs, gloo on CPUs (auto: by the device)")
    p.add_argument("--init-from", help="with --init-from-a: the best.pt checkpoint of the vgg-a run to start from")
    p.add_argument("--events", help="append each epoch and the result as JSON lines to this file (rank 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = json.loads(Path(args.config_json).read_text()) if args.config_json else {}
    group = distributed.join(args.dist_backend)
    config = RunConfig.from_dict({**settings, **given_settings(args), "world_size": group.world})
    distributed.check(config.world_size, config.device, config.sync_batch_norm)
    events = EventLog(args.events if group.is_main else None)
    try:
        with progress.RunProgress(quiet=not group.is_main) as bar:
            result = fit(
                config,
                on_epoch=lambda stats: (bar.epoch_done(stats), events.write(epoch=asdict(stats))),
                on_batch=bar.batch_done,
                checkpoint_dir=args.checkpoint_dir,
                data_dir=args.data_dir,
                group=group,
                init_from=args.init_from,
            )
    finally:
        group.close()
    events.write(result=result.record())
    if not group.is_main:
        return 0
    progress.out.print(  # the result: stdout
        f"[bold]{config.model}[/] test acc [bold green]{result.test_acc:.4f}[/], best val acc "
        f"{result.best_val_acc:.4f} (epoch {result.best_epoch}), {result.train_seconds:.1f} s training, "
        f"{result.history[-1].images_per_s:.0f} img/s, {result.params:,} params, device {result.device}"
    )
    return 0


class EventLog:
    """JSON lines that a launching worker reads while the run goes on (bench.launch)."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None

    def write(self, **event: Any) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:  # one write of one whole line: the reader never sees half
                f.write(json.dumps(event) + "\n")


if __name__ == "__main__":
    cli(main)
