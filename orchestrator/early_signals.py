"""SIGINT/SIGTERM heard from the first instant of the process (importing the tool takes about a
second): remembered here until the run listens itself, so a signal during start-up stops the
run like any other (exit 75) instead of killing it. Imports nothing of the tool."""

from __future__ import annotations

import signal
from types import FrameType

_heard: list[int] = []


def _remember(signum: int, _frame: FrameType | None) -> None:
    _heard.append(signum)


def install() -> None:
    """Remember SIGINT/SIGTERM until :func:`take` (called once the run listens itself)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _remember)


def take() -> list[int]:
    """The signals heard so far (each once)."""
    heard = list(_heard)
    _heard.clear()
    return heard
