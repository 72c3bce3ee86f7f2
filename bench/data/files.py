"""Finding dataset files and downloading them when they are missing.

A dataset is looked for in `data_dir` (else $BENCH_DATA), then its system location (Debian's
`dataset-fashion-mnist` installs /usr/share/datasets/fashion-mnist), then earlier downloads under the
cache root ($BENCH_CACHE, default ~/.cache/vgg-bench). A download goes into a temporary folder inside
its destination and is moved into place only when complete; $BENCH_OFFLINE=1 never tries one.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from bench.errors import BenchError, one_line

SYSTEM_LOCATIONS = {"fashion-mnist": ("/usr/share/datasets/fashion-mnist",)}
DOWNLOAD_TIMEOUT_S = 30.0


class DownloadFailed(Exception):
    """A download that did not complete; its message is one line."""


def cache_root() -> Path:
    env = os.environ.get("BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vgg-bench"


def search_roots(name: str, data_dir) -> tuple[list[Path], Path]:
    """(directories to look in, in order; the directory a download goes to)."""
    user = data_dir if data_dir is not None else os.environ.get("BENCH_DATA") or None
    roots: list[Path] = []
    if user is not None:
        roots.append(Path(user).expanduser())
    roots += [Path(p) for p in SYSTEM_LOCATIONS.get(name, ())]
    cache = cache_root()
    if cache not in roots:
        roots.append(cache)
    dest = Path(user).expanduser() if user is not None else cache
    return roots, dest


def offline() -> bool:
    return os.environ.get("BENCH_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def download_reason(exc: BaseException) -> str:
    """A failed download in one line: of torchvision's report over several mirrors, one reason."""
    inner = re.search(r"<urlopen error [^>]*>", one_line(exc, limit=10_000))
    return inner.group(0) if inner else one_line(exc)


def download(name: str, dest: Path, fetch: Callable[[Path], list[Path]]) -> Path:
    """Run `fetch(tmpdir)` with torchvision quiet and a socket timeout; move what it made into dest/name.

    Returns the final folder, or raises DownloadFailed with a one-line reason. Nothing is left behind on
    failure (the download happens in a temporary folder inside `dest`).
    """
    if offline():
        raise DownloadFailed("BENCH_OFFLINE is set")
    created = [p for p in (dest, *dest.parents) if not p.exists()]  # removed again if the download fails
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=dest))
    except OSError as exc:
        raise DownloadFailed(f"cannot write to {dest}: {one_line(exc)}") from None
    ok = False
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    quiet = io.StringIO()
    try:
        print(f"downloading {name} into {dest / name} ...", file=sys.stderr, flush=True)
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            made = fetch(tmp)
        final = dest / name
        final.mkdir(parents=True, exist_ok=True)
        for item in made:
            target = final / item.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(item, target)
        ok = True
        return final
    except BenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the download is reported in one line
        raise DownloadFailed(download_reason(exc)) from None
    finally:
        socket.setdefaulttimeout(old_timeout)
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for p in created:  # innermost first; only folders this call made, and only while empty
                with contextlib.suppress(OSError):
                    p.rmdir()


def write_atomically(path: Path, write: Callable[[io.BufferedWriter], None]) -> bool:
    """Write a file through a temporary sibling and a rename; False (with a warning) when it cannot."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        warnings.warn(f"could not write {path}: {exc}", stacklevel=3)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return False
