"""A resumed run polls its copies in flight once before it starts checking the copies made.

The checks after a copy (verify, carry) already wait behind every poll for the request budget
and for a connection (``AFTER_COPY``). But a resumed copy's first poll comes ``poll_min`` after
its tenant's probe answers, and in that while the checks of the copies made had the event loop
to themselves: at 100,000 items, 5,400 checks started and 2,200 of their requests went out before
the first poll was answered (seconds of CPU, most of the time from start to first poll). So the
line of checks (:class:`~orchestrator.engine.afterqueue.AfterCopies`) is held until each copy in
flight that the run follows has been polled once (answered or not) or its drive has ended, and
every tenant is probed; at the latest ``poll_max + request_timeout`` after the probing (a
copy's first poll may be due only later: the checks do not wait for it). Every check still runs.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from orchestrator.clock import Clock
from orchestrator.engine.afterqueue import AfterCopies


class FirstPolls:
    """Holds ``after`` from now until the copies in flight it follows are polled once."""

    def __init__(self, after: AfterCopies, clock: Clock, longest: float) -> None:
        self._after = after
        self._clock = clock
        self._longest = longest  # seconds after the probing: the checks wait no longer
        self._waiting: set[str] = set()  # keys of the copies not yet polled
        self._probed = anyio.Event()
        self._done = anyio.Event()
        after.hold()

    def follow(self, key: str) -> None:
        """The copy in flight ``key`` is driven: the checks wait for its first poll."""
        self._waiting.add(key)

    def hook(self, key: str) -> Callable[[], None] | None:
        """What the drive of ``key`` calls once polled (or ended); None if nothing waits."""
        if key not in self._waiting:
            return None
        return lambda: self._polled(key)

    def probed(self) -> None:
        """Every tenant is probed: no copy in flight is followed from now on."""
        self._probed.set()
        self._check()

    def _polled(self, key: str) -> None:
        self._waiting.discard(key)
        self._check()

    def _check(self) -> None:
        if self._probed.is_set() and not self._waiting:
            self._done.set()

    async def release(self) -> None:
        """A task of the run's work: the checks start once every copy is polled (or ended),
        at the latest ``longest`` seconds after the probing."""
        async with anyio.create_task_group() as group:

            async def at_the_latest() -> None:
                await self._probed.wait()
                await self._clock.sleep(self._longest)
                group.cancel_scope.cancel()

            group.start_soon(at_the_latest)
            await self._done.wait()
            group.cancel_scope.cancel()
        self._after.release()
