"""The clock seam: wall time and sleeping, so tests can run on virtual time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    # time.time itself (no method frame around it): read a few times for every request.
    now = staticmethod(time.time)

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        # asyncio's own sleep (runs are asyncio's, eventloop.py): anyio.sleep looks its backend
        # up at every call, ~1.4 us of a poll's sleep. An anyio cancel scope cancels it the same.
        return asyncio.sleep(max(0.0, seconds))
