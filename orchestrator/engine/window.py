"""One account's copy slots: the cap, the queue of items waiting for a slot, back-pressure.

A slot is held from the moment an item's intent is saved until its copy is over (or proven
absent), so the count of held slots is an upper bound of the account's copies in INIT/RUNNING,
including copies adopted after a restart and items whose submission outcome is unknown.
After ``IMG.0060`` (the cloud says too many tasks, for example because of copies started
outside the tool) the window shrinks to what is in use and waits with exponential back-off and
full jitter; each copy that starts without refusal lets it grow back by one, up to the cap.

Order: within a tenant, :mod:`orchestrator.core.order` (higher ``priority`` first, then the
largest image first); tenants that share the window (config tenants of one account) take
turns, the one that has started the fewest copies going next.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.core.backoff import back_pressure_backoff
from orchestrator.core.model import Item
from orchestrator.core.order import ORDERS, Order, SortKey


@dataclass(order=True, slots=True)  # one per waiting item: 100,000 at the start of a list
class _Queued:
    sort_key: SortKey
    item: Item = field(compare=False)


class Window:
    def __init__(
        self,
        key: str,
        limit: int,
        *,
        backoff_min: float,
        backoff_max: float,
        order: Order = Order.LARGEST,
    ) -> None:
        self.key = key
        self.limit = limit
        self.capacity = limit
        self.in_use = 0
        self.max_in_use = 0
        self.not_before = 0.0
        self.back_pressure_streak = 0
        self._backoff = back_pressure_backoff(backoff_min, backoff_max)
        self._order = ORDERS[order]
        self._queues: dict[str, list[_Queued]] = {}  # tenant -> heap of its waiting items
        self._waiting = 0
        self._started: Counter[str] = Counter()  # tenant -> items handed out
        self._delayed: list[tuple[float, str, Item]] = []  # (ready_at, key, item)
        self._changed: asyncio.Event | None = None  # made when someone waits for a change

    # -- queue ----------------------------------------------------------------------------------

    def enqueue(self, item: Item, ready_at: float = 0.0) -> None:
        if ready_at > 0.0:
            heapq.heappush(self._delayed, (ready_at, item.key, item))
        else:
            self._push(item)
        self._notify()

    def _push(self, item: Item) -> None:
        heapq.heappush(
            self._queues.setdefault(item.row.tenant, []), _Queued(self._order(item), item)
        )
        self._waiting += 1

    def drop(self, where: Callable[[Item], bool]) -> None:
        """Forget the waiting items ``where`` says (their endpoint is down: not this run)."""
        for tenant, heap in list(self._queues.items()):
            kept = [queued for queued in heap if not where(queued.item)]
            self._waiting -= len(heap) - len(kept)
            if kept:
                heapq.heapify(kept)
                self._queues[tenant] = kept
            else:
                del self._queues[tenant]
        delayed = [entry for entry in self._delayed if not where(entry[2])]
        heapq.heapify(delayed)
        self._delayed = delayed
        self._notify()

    def has_work(self) -> bool:
        return bool(self._waiting or self._delayed or self.in_use)

    def queued(self) -> int:
        return self._waiting + len(self._delayed)

    def next_ready(self, now: float) -> Item | None:
        """The best item that may be submitted now, if a slot is free; else None."""
        while self._delayed and self._delayed[0][0] <= now:
            _, _, item = heapq.heappop(self._delayed)
            self._push(item)
        if not self._waiting or not self.slot_free(now):
            return None
        # The tenant that has started the fewest copies goes next; its best item goes first.
        tenant = min(self._queues, key=lambda t: (self._started[t], self._queues[t][0].sort_key))
        heap = self._queues[tenant]
        item = heapq.heappop(heap).item
        if not heap:
            del self._queues[tenant]
        self._waiting -= 1
        self._started[tenant] += 1
        return item

    def wake_at(self, now: float) -> float | None:
        """When something may become ready without any other event, or None."""
        times = []
        if self._delayed:
            times.append(self._delayed[0][0])
        if self._waiting and self.in_use < self.capacity and self.not_before > now:
            times.append(self.not_before)
        return min(times) if times else None

    # -- slots ----------------------------------------------------------------------------------

    def slot_free(self, now: float) -> bool:
        return self.in_use < self.capacity and now >= self.not_before

    def take(self) -> None:
        """Hold a slot (also used, without waiting, for copies adopted in flight)."""
        self.in_use += 1
        self.max_in_use = max(self.max_in_use, self.in_use)

    def release(self) -> None:
        self.in_use -= 1
        self._notify()

    def back_pressure(self, now: float, rng: random.Random) -> float:
        """The cloud refused a copy for too many tasks: shrink and back off. Returns the wait.

        Called by the item that was refused, while it still holds its slot: the window shrinks
        to the other copies in flight (at least one).
        """
        self.back_pressure_streak += 1
        self.capacity = max(1, min(self.capacity, self.in_use - 1))
        wait = self._backoff.delay(self.back_pressure_streak, rng)
        self.not_before = max(self.not_before, now + wait)
        self._notify()
        return wait

    def started(self) -> None:
        """A copy was accepted: the cloud had room, so grow back by one."""
        self.back_pressure_streak = 0
        if self.capacity < self.limit:
            self.capacity += 1
            self._notify()

    # -- waiting --------------------------------------------------------------------------------

    def wake(self) -> None:
        """Wake whoever waits for a change (submitting stops: the waiter looks again)."""
        self._notify()

    def _notify(self) -> None:
        # Only a waiter needs waking: filling the queue with 100,000 items costs no events.
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def changed(self) -> None:
        """Return at the next change of the queue or the slots.

        (An asyncio event, not anyio's, which looks its backend up as it is made: once per
        item handed out. Runs are asyncio's (``eventloop.py``); a cancel scope cancels the
        wait all the same.)"""
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()
