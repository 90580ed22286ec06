"""The tests' one virtual clock, in the spirit of trio's MockClock with autojump.

``VirtualClock.sleep`` parks the task; a background task (:meth:`autojump`) waits until every
task of the event loop is blocked, then jumps the clock to the earliest sleeper's wake-up time
and wakes it. A 6-hour settle window therefore takes no real time. :meth:`advance` moves time
while nothing runs (the machine is off, the wall clock is set).

``InstantClock`` is the same clock for code that sleeps in one task at a time (a client's
retries, a token bucket): a sleep moves time at once, no background task needed.
Every sleep asked for is recorded in ``sleeps``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

import anyio


class _Sleeper:
    __slots__ = ("cancelled", "event", "wake_at")

    def __init__(self, wake_at: float) -> None:
        self.wake_at = wake_at
        self.event = anyio.Event()
        self.cancelled = False


class VirtualClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, _Sleeper]] = []
        self._seq = itertools.count()
        self.jumps = 0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Time passing while no run is going; negative: the wall clock is set back."""
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        sleeper = _Sleeper(self._now + seconds)
        heapq.heappush(self._heap, (sleeper.wake_at, next(self._seq), sleeper))
        try:
            await sleeper.event.wait()
        finally:
            sleeper.cancelled = True

    def _pop_due(self) -> bool:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            return False
        wake_at = self._heap[0][0]
        self._now = max(self._now, wake_at)
        self.jumps += 1
        while self._heap and self._heap[0][0] <= self._now:
            _, _, sleeper = heapq.heappop(self._heap)
            if not sleeper.cancelled:
                sleeper.event.set()
        return True

    async def autojump(self) -> None:
        """Run in the background of a test: advance time whenever everything is blocked.

        (anyio's ``wait_all_tasks_blocked`` sleeps 0.1 s of real time whenever a task is busy,
        which makes long virtual runs slow; this checks the same thing on every loop turn.)
        """
        this = asyncio.current_task()
        while True:
            await asyncio.sleep(0)
            if not all_blocked(this):
                continue
            if not self._pop_due():
                await asyncio.sleep(0.001)  # nobody sleeps on the clock: let real I/O finish


class InstantClock(VirtualClock):
    """A sleep moves time by its length at once (after one checkpoint); no autojump."""

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await anyio.lowlevel.checkpoint()


def all_blocked(this: asyncio.Task[object] | None) -> bool:
    """Every other task waits on a future that is not done, and no callback is queued that
    could wake one (a finished child's done-callback wakes its task group only once it runs).
    asyncio internals, test-only."""
    if getattr(asyncio.get_running_loop(), "_ready", None):
        return False
    for task in asyncio.all_tasks():
        if task is this:
            continue
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is None or waiter.done():
            return False
    return True
