"""Run a bench command on a GPU machine from the device kit, and leave what a person wants in one folder.

The kit's wheels are installed offline into an environment that sees the image's own packages (a venv
without pip whose .pth adds the image's site folders: the image's torch is used, and pip never touches the
image). The command runs inside the output folder, so its MLflow store (mlflow.db, mlruns/), Optuna
journal (.bench/optuna.journal), worker logs and reports land there. Checkpoints do not: the checkpoint
root .bench/checkpoints is a link to a folder outside, and the runs' MLflow `checkpoints/` artifacts are
moved there when the command ends. Standard library and bench.errors only until the kit is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import site
import subprocess
import sys
import time
import venv
from pathlib import Path

from bench.errors import BenchError, choices
from bench.kit import manifest as kit_manifest

ROOT = Path(__file__).resolve().parent.parent  # as bench.provenance has it; importing that loads torch
COMMANDS = ("ablation", "search", "report", "benchmark", "train", "predict", "post", "models", "benchmark.stream")
STOP_GRACE_S = 60.0  # after SIGTERM, the time a command has to mark its runs KILLED before it is killed
INSTALLED = "kit-installed"  # written into an environment once its install completed


def check_job(job: list[str]) -> None:
    if not job:
        raise BenchError(
            "no command given; name a bench command and its flags, e.g. ablation --study depth --budget smoke"
        )
    if job[0] not in COMMANDS:
        choices("command", job[0], COMMANDS)


def check_out(out: Path, kit: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file; give a folder (made if missing)")
    if out.resolve().is_relative_to(kit.resolve()):
        raise BenchError(f"--out {out} is inside the kit {kit}; give a folder of its own")


def site_folders() -> list[str]:
    """Where the running (image's) interpreter finds its packages: system, venv or conda alike."""
    folders = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        folders.append(site.getusersitepackages())
    return [f for f in folders if Path(f).is_dir()]


def environment(kit: Path, manifest: dict, home: Path) -> Path:
    """The python of `home`, an environment with the image's packages and the kit's, installed offline
    from the kit once (a half-made one is made again)."""
    python = home / "bin" / "python"
    if (home / INSTALLED).is_file():
        print(f"the kit is installed in {home}", file=sys.stderr)
        return python
    shutil.rmtree(home, ignore_errors=True)
    started = time.monotonic()
    venv.EnvBuilder(with_pip=False, symlinks=True).create(home)
    purelib = next((home / "lib").glob("python3*/site-packages"))
    # addsitedir, not a bare path: it also reads the .pth files of the image's folders (editable installs).
    lines = [f"import site; site.addsitedir({folder!r})\n" for folder in site_folders()]
    (purelib / "_image.pth").write_text("".join(lines))
    # --isolated: no pip configuration of the machine's; --no-compile: byte-compiling took 2/3 of the time.
    done = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--isolated",
            "--no-index",
            "--find-links",
            str(kit / kit_manifest.WHEELS),
            "--disable-pip-version-check",
            "--quiet",
            "--no-warn-script-location",
            "--no-compile",
            *manifest["requirements"],
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        raise BenchError(install_failure(done.stderr))
    (home / INSTALLED).write_text(kit_manifest.digest(manifest) + "\n")
    seconds = time.monotonic() - started
    print(
        f"installed the kit ({len(manifest['wheels'])} wheels) offline in {seconds:.1f} s into {home}", file=sys.stderr
    )
    return python


def install_failure(stderr: str) -> str:
    """pip's refusal as our one line: a wheel this machine needs and the kit lacks is named."""
    hint = "build the kit with --image FILE holding this machine's `python3 -m pip freeze`"
    absent = re.search(r"No matching distribution found for (\S+)", stderr)
    if absent:
        return f"the kit has no wheel for {absent[1]}, which this machine needs; {hint}"
    if "No module named pip" in stderr:
        return f"{sys.executable} has no pip to install the kit with; use a Python that has (python3 -m pip)"
    errors = [line.removeprefix("ERROR: ") for line in stderr.splitlines() if line.startswith("ERROR")]
    reason = errors[-1] if errors else " ".join(stderr.split()[-30:])
    return f"installing the kit failed: {reason}; {hint}"


def link_checkpoints(out: Path, keep: Path) -> None:
    """Make out/.bench/checkpoints (where studies keep checkpoints by default) a link to keep/checkpoints;
    checkpoints already in out move there first."""
    target = keep / "checkpoints"
    target.mkdir(parents=True, exist_ok=True)
    link = out / ".bench" / "checkpoints"
    if link.is_symlink():
        link.unlink()
    elif link.is_dir():
        for item in link.iterdir():
            shutil.move(str(item), str(target / item.name))
        link.rmdir()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve(), target_is_directory=True)


def move_checkpoint_artifacts(out: Path, keep: Path) -> int:
    """Move every run's MLflow `checkpoints/` artifacts out of out/mlruns into keep; how many runs had any."""
    moved = 0
    for folder in sorted((out / "mlruns").glob("*/*/artifacts/checkpoints")):
        dest = keep / folder.relative_to(out)
        if dest.exists():
            shutil.rmtree(dest)  # the same run logged its checkpoint again: the newer one is kept
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(dest))
        moved += 1
    return moved


def follow(command: list[str], cwd: Path, env: dict[str, str], time_limit: float | None) -> int:
    """Run `command` to its end, or stop it (SIGTERM, as a scheduler would) at `time_limit` seconds.
    A SIGTERM sent to us goes to it; a terminal's Ctrl-C reaches it directly, and we wait for it."""
    child = subprocess.Popen(command, cwd=cwd, env=env)
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: child.terminate()),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
    }
    try:
        try:
            child.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            print(
                f"note: the command reached --time-limit {time_limit:g} s; stopping it (its runs end "
                "KILLED and resume when it runs again)",
                file=sys.stderr,
            )
            child.terminate()
        try:
            child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


def job_environment(kit: Path, out: Path) -> dict[str, str]:
    """The command's environment: this tree's bench, the kit's data, nothing downloaded, MLflow in out."""
    path = [str(ROOT), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(path),
        "BENCH_OFFLINE": "1",
        "BENCH_DATA": str((kit / kit_manifest.DATA).resolve()),
        "MLFLOW_TRACKING_URI": f"sqlite:///{(out / 'mlflow.db').resolve()}",
    }


def run(kit: Path, out: Path, job: list[str], time_limit: float | None, keep: Path | None) -> int:
    """Check, install, run `job` (a bench command and its flags) inside `out`, tidy; its exit code."""
    manifest = kit_manifest.read(kit)
    kit_manifest.check(kit, manifest)
    check_job(job)
    check_out(out, kit)
    if time_limit is not None and not (0 < time_limit < float("inf")):
        raise BenchError(f"--time-limit {time_limit} is not a positive number of seconds; give e.g. 540")
    from bench.data.files import cache_root  # loads torch: only once the cheap checks passed

    home = cache_root() / "kit-env" / f"{kit_manifest.running_python()}-{kit_manifest.digest(manifest)}"
    python = environment(kit, manifest, home)
    out.mkdir(parents=True, exist_ok=True)
    keep = keep or cache_root() / "kit-checkpoints" / re.sub(r"[^A-Za-z0-9._-]+", "_", str(out.resolve()))
    link_checkpoints(out, keep)
    try:
        command = [str(python), "-m", f"bench.{job[0]}", *job[1:]]
        code = follow(command, out, job_environment(kit, out), time_limit)
    finally:
        moved = move_checkpoint_artifacts(out, keep)
        print(
            f"results in {out}: the MLflow store (mlflow.db, mlruns/), the Optuna journal (.bench/), "
            f"reports/; checkpoints ({moved} runs' MLflow copies and the checkpoint root) kept in {keep}",
            file=sys.stderr,
        )
    return code
