"""The items whose copy is made, waiting for their steps after the copy (verify, carry).

They hold no copy slot, so nothing else bounds them: 100,000 copies that end faster than their
checks would each keep a task (and its calls' state) alive at once. Here they wait in line, as
the items they are (already in memory: the store holds them), and at most ``limit`` of them
are worked on at a time, each by one of as many workers; a worker ends when the line is
empty, so a run still ends when its last item is done. The order is first come, first served.

A worker is a task of the run's work, or the task that drove the item's copy: once its slot is
released (``verifying``, not yet saved: saved here if it must wait in line) the driver joins
the line and, when a worker is missing, serves it itself (:meth:`AfterCopies.carry_on`): no
task is started per item for its steps after the copy (a spawn costs a task, a cancel scope
and an event: a tenth of a millisecond of CPU).
"""

from __future__ import annotations

from collections import deque

import anyio.abc

from orchestrator.core.model import Item
from orchestrator.engine.aftercopy import AfterCopy
from orchestrator.engine.context import RunContext

# Items verified and carried at the same time. A check mostly waits (for the new image to be
# active, with back-off up to poll_max): too few at a time and the copies race ahead of their
# checks (256 left 50,000 of 100,000 items waiting to be verified); this many cost a few MB.
AFTER_COPY_CONCURRENCY = 2048


class AfterCopies:
    """A line of items for :class:`AfterCopy`, served by at most ``limit`` tasks of ``work``."""

    def __init__(
        self, ctx: RunContext, work: anyio.abc.TaskGroup, limit: int | None = None
    ) -> None:
        self._ctx = ctx
        self._work = work
        self._limit = limit or AFTER_COPY_CONCURRENCY
        self._waiting: deque[Item] = deque()
        self._held = False  # items wait, no worker starts (engine/firstpolls.py)
        self.workers = 0  # tasks working through the line now

    def add(self, item: Item) -> None:
        """``item`` (verifying or carrying) waits for its turn."""
        if self._admit(item):
            self._work.start_soon(self._serve)

    async def carry_on(self, item: Item) -> None:
        """As :meth:`add`, from a task whose own work is over (the drive of ``item``'s copy):
        when a worker is missing, this task is the worker, until the line is empty.

        A copy just made is ``verifying`` in memory only (engine/lifecycle.py): served at once
        by this task, it stays so; one that must wait in line is saved first."""
        if self._waiting or self._held or self.workers >= self._limit:
            await self._ctx.keep(item)
        if self._admit(item):
            await self._serve()

    def _admit(self, item: Item) -> bool:
        """``item`` in line; True when a worker is missing (counted now: the caller is it, or
        starts it)."""
        self._waiting.append(item)
        if self._held or self.workers >= self._limit:
            return False
        self.workers += 1
        return True

    def hold(self) -> None:
        """Items added wait in line, no one works on them, until :meth:`release`."""
        self._held = True

    def release(self) -> None:
        """The line is served again: as many workers as items wait, up to the limit."""
        if not self._held:
            return
        self._held = False
        while self.workers < min(self._limit, len(self._waiting)):
            self.workers += 1
            self._work.start_soon(self._serve)

    def waiting(self) -> int:
        return len(self._waiting)

    async def _serve(self) -> None:
        try:
            while self._waiting:
                await AfterCopy(self._ctx, self._waiting.popleft()).run()
        finally:
            self.workers -= 1
