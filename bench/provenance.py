"""Who produced a number: the machine, the device, the software and the project's commit."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def git_commit() -> str:
    """The project's commit, with '-dirty' when the checkout has uncommitted changes to tracked files."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + ("-dirty" if dirty else "")


def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {cpu_model()} ({torch.get_num_threads()} threads)"


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stamp(device: str | torch.device = "cpu") -> dict[str, str]:
    """The provenance every result carries: enough to know whether two numbers are comparable."""
    return {
        "host": socket.gethostname(),
        "device": device_name(device),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "commit": git_commit(),
    }
