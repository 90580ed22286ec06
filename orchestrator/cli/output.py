"""Broken output is not a bug: ``status`` and ``report`` writing to a full disk or a closed pipe.

The command's stdout is wrapped so that a failed write says which kind it was: a reader that
went away (``| head``) is :class:`OutputClosed`, which ends the command quietly with exit 0, as
``head`` users expect; any other failure (``> /dev/full``, an I/O error) is :class:`OutputFailed`,
a one-line message and exit 74.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, TextIO, cast

from orchestrator.state.store import StoreError


class OutputClosed(Exception):
    """The reader of stdout went away (a closed pipe): nothing more to say."""


class OutputFailed(StoreError):
    """stdout cannot be written (a full disk, an I/O error): exit 74."""


class _Guarded:
    """A text stream that turns the OSErrors of ``write`` and ``flush`` into the above."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def _failed(self, exc: OSError) -> Exception:
        if isinstance(exc, BrokenPipeError):
            return OutputClosed()
        return OutputFailed(f"cannot write the output: {exc.strerror or exc}")

    def write(self, text: str) -> int:
        try:
            return self._inner.write(text)
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._inner.flush()
        except OSError as exc:
            raise self._failed(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def guarded(stream: TextIO) -> TextIO:
    """``stream`` whose write failures are OutputClosed or OutputFailed."""
    return cast(TextIO, _Guarded(stream))


def silence_stdout(stream: TextIO) -> None:
    """After a failed write to the real stdout, point its descriptor at /dev/null: what is left
    in its buffer must not fail again (with a traceback) when the interpreter exits."""
    if stream is not sys.stdout:
        return
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
