"""One kind of user-facing error, and the CLI wrapper that turns it into one line.

Every mistake a person can make (an unknown name, a value out of range, a missing dataset, a
foreign checkpoint) raises BenchError with a message that says what is wrong and what would fix
it. Command-line entry points run through `cli`, which prints that line and exits 2 instead of
showing a traceback.
"""

from __future__ import annotations

import signal
import sys
from typing import Callable, NoReturn


class BenchError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def fail(message: str) -> NoReturn:
    raise BenchError(message)


def choices(kind: str, value: object, valid) -> NoReturn:
    """Raise the standard 'unknown X' error listing what would have been accepted."""
    raise BenchError(f"unknown {kind} {value!r}; choose one of: {', '.join(sorted(map(str, valid)))}")


def cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> NoReturn:
    """Run a command-line `main`, turning BenchError into `error: ...` on stderr and exit code 2.

    SIGTERM is treated like Ctrl-C, so a run stopped by a scheduler is marked KILLED, not lost.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = main(argv)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def _interrupt(signum, frame) -> NoReturn:
    raise KeyboardInterrupt


def redact(url: str) -> str:
    """Hide the password of a URL (postgresql://user:secret@host/db -> postgresql://user:***@host/db)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
