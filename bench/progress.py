"""What a person watches while runs train: rich progress bars for the study, the run, the epoch."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)  # progress and notes: stdout stays clean for results
out = Console(width=None if sys.stdout.isatty() else 160)  # tables and results; wide in files

# Reading the loss costs a host-device sync, so the bar refreshes it only every so many batches.
LOSS_EVERY = 20


class RunProgress:
    """Bars for one run: epochs, and batches of the current epoch with loss and val accuracy.

    Used alone by `bench.train`, or nested under a study bar by passing that study's Progress.
    """

    def __init__(self, progress: Progress | None = None, label: str = "run", epochs: int | None = None,
                 quiet: bool = False):
        self._own = progress is None
        self.progress = progress or make_progress()
        if self._own:
            self.progress.disable = quiet  # e.g. the ranks of a torchrun other than rank 0
        self.label = label
        self.epochs = self.progress.add_task(f"{escape(label)} epochs", total=epochs, info="")
        self.batches = self.progress.add_task("  batches", total=None, info="")
        self.val = ""

    def __enter__(self) -> RunProgress:
        if self._own:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.remove_task(self.batches)
        self.progress.remove_task(self.epochs)
        if self._own:
            self.progress.stop()

    def batch_done(self, done: int, total: int, loss) -> None:
        info = None
        if done % LOSS_EVERY == 0 or done == total:
            info = f"loss {float(loss):.3f}{self.val}"
        self.progress.update(self.batches, completed=done, total=total, **({"info": info} if info else {}))

    def epoch_done(self, stats) -> None:
        self.val = f"  val acc {stats.val_acc:.3f}  {stats.images_per_s:.0f} img/s"
        self.progress.update(self.epochs, completed=stats.epoch, info=self.val)


def make_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )


class StudyProgress:
    """A bar for the study (runs done / total) with the current run's bars nested under it."""

    def __init__(self, name: str, total: int | None, quiet: bool = False):
        self.progress = make_progress()
        self.progress.disable = quiet
        self.task = self.progress.add_task(f"[bold]{escape(name)}[/] runs", total=total, info="")
        self.current: RunProgress | None = None

    def __enter__(self) -> StudyProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, done: int, info: str = "") -> None:
        self.progress.update(self.task, completed=done, info=escape(info))

    def run(self, label: str, epochs: int) -> RunProgress:
        self.current = RunProgress(self.progress, label, epochs)
        return self.current

    def batch_done(self, done: int, total: int, loss) -> None:
        self.current.batch_done(done, total, loss)

    def epoch_done(self, stats) -> None:
        self.current.epoch_done(stats)
