"""The clock seam: wall time and sleeping, so tests can run on virtual time."""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    # time.time itself (no method frame around it): read a few times for every request.
    now = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))
