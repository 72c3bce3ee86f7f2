"""python -m bench.train: train one run; under `torchrun --nproc-per-node N -m bench.train ...`,
one run over N processes (bench.run.launch starts it so, and follows its --events file).

The run is tracked as every study run is (MLflow experiment "train" of the same store: params,
curves, dataset, plots, best checkpoint and the servable model, so bench.predict, bench.post and
`mlflow models serve` work on it), unless --no-track; under --events the launching study worker
records it instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import progress
from bench.cli import add_config_flags, command_line, given_settings
from bench.config import RunConfig
from bench.engine import distributed
from bench.engine.train import fit
from bench.errors import Parser, cli, redact
from bench.run import preflight

EXPERIMENT = "train"  # the MLflow experiment of lone runs


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m bench.train", description="Train one model.")
    add_config_flags(p, defaults=False)
    p.add_argument("--config-json", help="the run's settings as a JSON object file (flags override it)")
    p.add_argument("--data-dir", help="where the dataset files are (default: $BENCH_DATA, system, download)")
    p.add_argument("--checkpoint-dir", help="write per-epoch checkpoints here and resume from them")
    p.add_argument(
        "--dist-backend",
        default="auto",
        choices=distributed.BACKENDS,
        help="under torchrun: nccl on GPUs, gloo on CPUs (auto: by the device)",
    )
    p.add_argument("--init-from", help="with --init-from-a: the best.pt checkpoint of the vgg-a run to start from")
    p.add_argument(
        "--events",
        help="append each epoch and the result as JSON lines to this file (rank 0); "
        "the process that reads it records the run, so this one does not track",
    )
    p.add_argument(
        "--no-track",
        dest="track",
        action="store_false",
        help=f"keep nothing in MLflow (default: a run in experiment {EXPERIMENT!r} of the store)",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument(
        "--no-system-metrics",
        dest="system_metrics",
        action="store_false",
        help="do not sample CPU, memory and GPU use into the run (MLflow's system/ metrics)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = json.loads(Path(args.config_json).read_text()) if args.config_json else {}
    group = distributed.join(args.dist_backend)
    config = RunConfig.from_dict({**settings, **given_settings(args), "world_size": group.world})
    distributed.check(config.world_size, config.device, config.sync_batch_norm)
    events = EventLog(args.events if group.is_main else None)
    track = args.track and group.is_main and args.events is None
    try:
        recorder = (
            tracked_run(config, args, command_line("train", argv)) if track else contextlib.nullcontext(Untracked())
        )
        with recorder as run, progress.RunProgress(quiet=not group.is_main) as bar:
            result = fit(
                config,
                on_epoch=lambda stats: (bar.epoch_done(stats), events.write(epoch=asdict(stats)), run.epoch(stats)),
                on_batch=bar.batch_done,
                checkpoint_dir=run.checkpoint_dir or args.checkpoint_dir,
                data_dir=args.data_dir,
                group=group,
                init_from=args.init_from,
            )
            run.finish(result)
        # Every rank done before any tears the group down: a rank whose peer closed its connections
        # first was aborted by gloo at exit (seen in CI as 'terminate called without an active exception').
        group.barrier()
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


class Untracked:
    """What a run that keeps nothing in MLflow does with its epochs and result: nothing."""

    checkpoint_dir = None

    def epoch(self, stats) -> None:
        pass

    def finish(self, result) -> None:
        pass


class TrackedRun:
    """A lone run recorded as a study's runs are: its epochs as they end, then its result."""

    def __init__(self, tracker, run_id: str, config: RunConfig, checkpoint_dir: str):
        self.tracker, self.run_id, self.config, self.checkpoint_dir = tracker, run_id, config, checkpoint_dir
        self.logged = tracker.logged_epochs(run_id)  # a resumed run's epochs stay logged once

    def epoch(self, stats) -> None:
        if stats.epoch not in self.logged:
            self.tracker.log_epoch(self.run_id, stats)

    def finish(self, result) -> None:
        self.tracker.log_result(self.run_id, self.config, result, run_name(self.config))
        self.tracker.set_status(self.run_id, "FINISHED", state="complete")
        progress.console.print(
            f"logged as MLflow run {self.run_id} in experiment {EXPERIMENT!r} of {redact(self.tracker.uri)}: "
            f"python -m bench.predict --run {self.run_id} IMAGE, "
            f"or mlflow models serve -m runs:/{self.run_id}/model",
            highlight=False,
            soft_wrap=True,
        )


@contextlib.contextmanager
def tracked_run(config: RunConfig, args: argparse.Namespace, command: str) -> Iterator[TrackedRun]:
    """The run in MLflow, opened once everything that can be checked was; KILLED or FAILED if it stops.

    Without --checkpoint-dir the checkpoints (the best one is logged) go to a folder removed after."""
    from bench.tracking import Tracker  # MLflow is imported only when a run is tracked

    tracker = Tracker(args.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        folder = args.checkpoint_dir or scratch
        preflight.check([config], data_dir=args.data_dir, checkpoint_root=Path(folder))
        experiment = tracker.experiment_id(EXPERIMENT)
        run_id = tracker.start_child(experiment, None, config, run_name(config), {"command": command})
        try:
            with tracker.system_metrics(run_id, args.system_metrics):
                yield TrackedRun(tracker, run_id, config, folder)
        except KeyboardInterrupt:
            tracker.set_status(run_id, "KILLED", state="interrupted")
            raise
        except BaseException:
            tracker.set_status(run_id, "FAILED", state="failed")
            raise


def run_name(config: RunConfig) -> str:
    return f"{config.model} seed={config.seed}"


class EventLog:
    """JSON lines that a launching worker reads while the run goes on (bench.run.launch)."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None

    def write(self, **event: Any) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:  # one write of one whole line: the reader never sees half
                f.write(json.dumps(event) + "\n")


if __name__ == "__main__":
    cli(main)
