"""The clock seam: wall time and sleeping, so tests can run on virtual time."""

from __future__ import annotations

import asyncio
import time
from threading import get_ident
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():  # cancelled meanwhile
        future.set_result(None)


class RealClock:
    # time.time itself (no method frame around it): read a few times for every request.
    now = staticmethod(time.time)

    def __init__(self) -> None:
        # The loop the last sleep ran in, and its thread. Made outside any loop (cli/run.py),
        # a clock learns its loop at its first sleep; a loop that is running, in the thread it
        # was learnt in, is that thread's running loop (a thread runs one loop at a time).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0

    async def sleep(self, seconds: float) -> None:
        """As ``asyncio.sleep`` (runs are asyncio's, eventloop.py): anyio.sleep looks its
        backend up at every call, and asyncio.sleep the running loop (a getpid() system call
        each on Python 3.11, ~3 an item). An anyio cancel scope cancels it the same."""
        loop = self._loop
        if loop is None or self._thread != get_ident() or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
            self._thread = get_ident()
        if not seconds > 0:  # (NaN too)
            await asyncio.sleep(0)  # a turn of the loop, as asyncio.sleep(0)
            return
        future = loop.create_future()
        timer = loop.call_later(seconds, _wake, future)
        try:
            await future
        finally:
            timer.cancel()
