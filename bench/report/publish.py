"""Where a report goes: its files (md, csv, png) into a folder, and onto each study's parent run
with the variants' convergence as the parent's tags. Used by `python -m bench.report` and at the
end of a study."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rich.markup import escape

from bench.progress import console
from bench.report import build, figures, render

DEFAULT_OUT = "reports"  # git-ignored; results/ holds the committed reference reports


def publish(tracker, report: build.Report, out: Path) -> list[Path]:
    """The report's files written into `out` and logged onto its studies' parent runs (those whose artifact
    folder is on this machine: see `log_to_parents`)."""
    paths = write(report, out)
    log_to_parents(tracker, report, paths)
    return paths


def write(report: build.Report, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / f"{report.name}.md", out / f"{report.name}.csv"
    write_atomically(md, render.markdown(report))
    write_atomically(csv, render.csv_text(report))
    return [md, csv, figures.figure(report, out / f"{report.name}.png")]


def write_atomically(path: Path, text: str) -> None:
    """The whole text or the old file, never half of it (a report in results/ is committed)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def log_to_parents(tracker, report: build.Report, paths: list[Path]) -> None:
    """The report's files as artifacts of each study's parent run, under report/, and each variant's
    convergence as the parent's tags."""
    for study, run_id in report.parents.items():
        tracker.set_tags(run_id, build.convergence_tags(report.summary[report.summary["study"] == study]))
    for run_id in dict.fromkeys(report.parents.values()):
        if (missing := tracker.missing_artifacts(run_id)) is None:
            tracker.log_artifacts(run_id, paths, "report")
        else:  # never recreate another machine's folders here
            console.print(
                f"the store's artifacts are not on this machine ({escape(missing)} does not exist: they stayed where "
                "the runs were made): the report is not logged to the parent run, and the runs' checkpoints and "
                "models cannot be loaded from this store (bench.predict, bench.post, mlflow models serve)"
            )
