"""The end of an ``ims-migrate run`` process: exit without tearing the heap down.

By the time the CLI has its exit code, the run has saved its state (checkpoint, journal fsynced),
closed the store and released the lock, written report.csv and the metrics, closed events.jsonl
and printed its last lines. What an ordinary interpreter exit still does then is free every
object one by one: for a 100,000-item state, seconds of a stop that promises to be quick. The
kernel frees the memory and closes the files anyway, so the exit skips it: the exit handlers run
(``atexit``: logging's, the stop's profile), stdout and stderr are flushed, and the process ends
with ``os._exit``. Imports nothing of the tool.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import NoReturn

_armed: list[bool] = []  # [True] once the process is to end with exit_now


def arm() -> None:
    """This process ends with :func:`exit_now` once its command is done: nothing it made needs
    freeing (the run's stop keeps the cyclic collector paused to the end: commands/run.py)."""
    _armed[:] = [True]


def armed() -> bool:
    return bool(_armed)


def exit_now(code: int) -> NoReturn:
    """Run the exit handlers, flush the terminal's streams, and end the process with ``code``
    (no interpreter teardown)."""
    # The registered exit handlers, as the interpreter would run them (private, but stable
    # since Python 3.0 and the only way to run them without the teardown that follows).
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more to tell anyone
            stream.flush()
    os._exit(code)
