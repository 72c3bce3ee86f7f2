"""One kind of user-facing error, and the CLI wrapper that turns it into one line.

Every mistake a person can make (an unknown name, a value out of range, a missing dataset, a
foreign checkpoint) raises BenchError with a message that says what is wrong and what would fix
it. Command-line entry points run through `cli`, which prints that line and exits 2 instead of
showing a traceback.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from typing import Callable, NoReturn


class BenchError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes (an unknown flag, a value of the wrong type) raise BenchError, so that
    `cli` prints them as one line instead of a usage dump."""

    def error(self, message: str):
        raise BenchError(f"{message} (python -m {self.prog.removeprefix('python -m ')} --help lists the flags)")


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
        _say(f"error: {redact(str(exc))}")
        sys.exit(2)
    except KeyboardInterrupt:
        _say("interrupted")
        sys.exit(130)
    sys.exit(code or 0)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message as one line of at most `limit` characters (its type name if empty).

    For messages that quote a third party's error (a driver, a decoder, a server) inside ours.
    """
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _say(line: str) -> None:
    """One line on stderr in one write: the ranks of a torchrun share that stream, and print() writes the
    text and its newline separately, so unbuffered lines of two ranks could run into one."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _interrupt(signum, frame) -> NoReturn:
    raise KeyboardInterrupt


# scheme://user:password@host: the password runs to the last "@" before the host, as urlsplit reads it.
_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*):(?P<password>[^\s/?#]*)@")


def redact(text: str) -> str:
    """Hide the password of every URL in `text` (a URL, a command line, an error message):
    postgresql://user:secret@host/db -> postgresql://user:***@host/db."""
    return _CREDENTIALS.sub(lambda m: f"{m['head']}:***@", text)
