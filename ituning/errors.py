"""Error types whose message is the whole story: one line naming what is wrong and how to fix it.

Command-line entry points catch :class:`ITuningError` and print ``error: <message>`` with exit code 2
(see :func:`cli_main`), so a user sees one actionable line instead of a traceback. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import TypeVar


class ITuningError(Exception):
    """Base class: the message must be a single line that names the artefact and the fix.

    ``exit_code`` is what a command returns for it: 2, the user's input was wrong and nothing ran;
    :class:`RunFailed` says work was attempted and failed (1).
    """

    exit_code = 2


class RunFailed(ITuningError):
    """Work started and did not finish (a worker died, a result could not be recorded)."""

    exit_code = 1


class ConfigError(ITuningError, ValueError):
    """A configuration value is invalid (wrong type, out of range, unknown key)."""


class DataError(ITuningError):
    """A dataset file or image is missing, malformed or outside the data root."""


class BackboneError(ITuningError):
    """A backbone (LM or vision encoder) cannot be resolved or loaded."""


class CheckpointError(ITuningError):
    """A checkpoint is missing, truncated, or not in a safe format."""


F = TypeVar("F", bound=Callable[..., int | None])


def cli_main(fn: F) -> F:
    """Wrap a ``main(argv) -> int`` so that ITuningError becomes ``error: ...`` on stderr and its
    ``exit_code`` (2 for bad input)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ITuningError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper  # type: ignore[return-value]


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line too: ``error: <prog>: <problem> (see --help)``, exit
    code 2. The stock parser prints the whole usage block first, burying the line that matters."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {printable(message)} (see --help)\n")


def validation_line(exc: Exception, source: str = "", *, prefix: str = "") -> str:
    """A pydantic ``ValidationError`` as one line: ``source: prefix.field: message`` of its first
    error (the one a user fixes first; the next run reports the next). A model-wide error has no
    field: ``source: message``."""
    err = exc.errors()[0]  # type: ignore[attr-defined]
    loc = ".".join(str(p) for p in (*([prefix] if prefix else []), *err["loc"]))
    msg = err["msg"].removeprefix("Value error, ")
    return ": ".join(part for part in (source, loc, msg) if part)


def printable(text: str) -> str:
    """``text`` with newlines and other unprintable characters escaped (``\\n``): an error line
    quotes names and values a user wrote, and the contract is one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def first_line(exc: BaseException) -> str:
    """An exception's first line (a driver's or library's message can span a page)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
