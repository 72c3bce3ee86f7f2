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
from collections.abc import Callable
from typing import NoReturn


class BenchError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class RunFailed(Exception):
    """One run cannot go on (its loss turned NaN), said in one line: the run is marked FAILED and the
    study or search goes on with the others, as for any failed run, but without a traceback."""


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


# scheme://user: where a password may follow. The user stops at ':' as in sqlalchemy's make_url; the
# password may hold any character (SQLAlchemy takes '/', '?', '#', ' ' and ':' raw), so where it ends is
# decided by `_password_end`, not by this pattern.
_USERINFO = re.compile(r"(?P<quote>['\"]?)\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/'\"]*:")
_SCHEME = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://")


def redact(text: str) -> str:
    """Hide the password of every URL in `text` (a URL, a command line, an error message):
    postgresql://user:secret@host/db -> postgresql://user:***@host/db, whatever characters the password
    has. Where it is unclear which '@' ends a password, more is hidden, never less."""
    parts, done = [], 0
    for match in _USERINFO.finditer(text):
        if match.start() < done:
            continue  # inside a password already hidden
        end = _password_end(text, match)
        if end is None:
            continue
        parts += [text[done : match.end()], "***"]
        done = end
    return "".join(parts) + text[done:]


def _password_end(text: str, match: re.Match) -> int | None:
    """Where the password that starts at `match.end()` ends: at the last '@' of the URL's line (index),
    or None if there is none. The last, as urllib splits (rpartition), not the first, as make_url does:
    a password may hold '@' and a space, so it is the widest span that cannot leak. A quoted URL
    (shlex.join quotes one with a space, '?' or '#') ends at its quote, any URL before the next one."""
    start = match.end()
    bounds = [
        text.find(match["quote"], start) if match["quote"] else -1,
        text.find("\n", start),
        _next_url(text, start),
    ]
    stop = min([b for b in bounds if b != -1], default=len(text))
    at = text.rfind("@", start, stop)
    return None if at == -1 else at


def _next_url(text: str, start: int) -> int:
    found = _SCHEME.search(text, start)
    return found.start() if found else -1
