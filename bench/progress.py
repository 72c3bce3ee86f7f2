"""What a person watches while runs train: rich progress bars for the study, the run, the epoch.

When stderr is no terminal (nohup, CI, a pipe) bars would show nothing until a finished one at the
end; a study then writes one plain line per run that ends instead (StudyProgress.lines).
"""

from __future__ import annotations

import sys
import time

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

    def __init__(
        self, progress: Progress | None = None, label: str = "run", epochs: int | None = None, quiet: bool = False
    ):
        self._own = progress is None
        self.progress = progress or make_progress()
        if self._own:
            self.progress.disable = quiet  # e.g. the ranks of a torchrun other than rank 0
        self.label = label
        self.epochs = self.progress.add_task(f"{escape(label)} epochs", total=epochs, info="")
        self.batches = self.progress.add_task("  batches", total=None, info="")
        self.val = ""
        self.total_epochs = epochs
        self.began = time.monotonic()
        self.last = None  # the latest epoch's stats: what the run's line reports
        self.best: float | None = None
        self.reported = False

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
        self.last = stats
        self.best = stats.val_acc if self.best is None else max(self.best, stats.val_acc)

    def summary(self) -> str:
        """The run in one line: what it reached, in how many epochs and seconds."""
        seconds = time.monotonic() - self.began
        if self.last is None:
            return f"{self.label}: ended with no epoch finished, {seconds:.0f} s"
        of = f" of {self.total_epochs}" if self.total_epochs else ""
        return (
            f"{self.label}: best val acc {self.best:.4f} (last {self.last.val_acc:.4f}), "
            f"{self.last.epoch}{of} epochs, {seconds:.0f} s"
        )


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
        self.lines = not quiet and not console.is_terminal  # plain lines instead of bars
        self.progress.disable = quiet or self.lines
        self.total = total
        self.task = self.progress.add_task(f"[bold]{escape(name)}[/] runs", total=total, info="")
        self.current: RunProgress | None = None

    def __enter__(self) -> StudyProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, done: int, info: str = "") -> None:
        """Called after each run (and while waiting on others' runs) with the study's count done."""
        self.progress.update(self.task, completed=done, info=escape(info))
        if self.lines and self.current is not None and not self.current.reported:
            self.current.reported = True
            left = f"{self.total - done} of {self.total} runs left" if self.total else f"{done} runs done"
            console.print(escape(f"{self.current.summary()}; {left}"), soft_wrap=True, highlight=False)

    def run(self, label: str, epochs: int) -> RunProgress:
        self.current = RunProgress(self.progress, label, epochs)
        return self.current

    def batch_done(self, done: int, total: int, loss) -> None:
        self.current.batch_done(done, total, loss)

    def epoch_done(self, stats) -> None:
        self.current.epoch_done(stats)
