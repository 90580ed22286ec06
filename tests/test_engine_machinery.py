"""What the engine's own machinery costs per item: tasks, turns of the event loop, copies of
the item. Each one is paid by every item of a 100,000-row list, so each is pinned here by a
count, never a time: a drive task takes the next item once its own is done (no task started
per item), the drive of an item's copy goes on with its steps after the copy (no task
started for them), a fresh listing of the target is read without a turn of the loop,
and the answered polls reach the item once, all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, ClassVar

import anyio
import pytest

from orchestrator.core.cloud import TenantCloud
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Item, Phase
from orchestrator.engine import afterqueue
from orchestrator.engine.afterqueue import AfterCopies
from orchestrator.engine.targets import TargetIndex, target_key
from tests.engine_harness import Scene

TENANTS = ("t0", "t1", "t2")


def scene_of(per_tenant: int) -> Scene:
    scene = Scene()
    for tenant in TENANTS:
        scene.account(tenant)
        for number in range(per_tenant):
            scene.row(tenant, 1.0 + number)
    return scene


async def tasks_of_a_run(scene: Scene) -> int:
    """The asyncio tasks started while ``scene`` runs to its end (every item succeeded)."""
    loop = asyncio.get_running_loop()
    started = [0]
    previous = loop.get_task_factory()

    def counting(
        loop: asyncio.AbstractEventLoop,
        coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any],
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        started[0] += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    try:
        result = await scene.run()
    finally:
        loop.set_task_factory(previous)
    assert result.exit_code == ExitCode.OK
    assert {item.phase for item in scene.items()} == {Phase.SUCCEEDED}
    return started[0]


async def test_the_tasks_of_a_run_grow_with_its_slots_not_with_its_items() -> None:
    """Twice the items beyond the slots (5 an account), not one task more: a drive task, its
    item done, waits for the window's next item (``Engine._hand``) instead of a task being
    started per item (an anyio task: its handle, cancel scope and event, an asyncio task).
    The drive still goes on with the checks after the copy (no task for them either). Up to
    the slots, one task more per item: each slot's first item starts its task."""
    few, slots, many = 4, 5, 16
    small = await tasks_of_a_run(scene_of(few))
    full = await tasks_of_a_run(scene_of(slots))
    large = await tasks_of_a_run(scene_of(many))
    assert full - small == len(TENANTS) * (slots - few)
    assert large - full <= len(TENANTS)  # at most a task a tenant beyond them (checks, timing)


class Recorded:
    """Stands for AfterCopy: notes the task each item's steps run in, and waits a turn."""

    runs: ClassVar[list[tuple[str, object]]] = []

    def __init__(self, _ctx: object, item: Item) -> None:
        self.item = item

    async def run(self) -> Item:
        Recorded.runs.append((self.item.key, anyio.get_current_task().id))
        await anyio.lowlevel.checkpoint()
        return self.item


async def test_the_drive_serves_the_line_itself_while_it_has_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With room in the line, the task that hands an item over works on it, then on what
    waits behind it; held or full, it hands the item over and returns at once."""
    monkeypatch.setattr(afterqueue, "AfterCopy", Recorded)
    Recorded.runs = []
    scene = scene_of(1)
    rows = scene.rows
    async with anyio.create_task_group() as work:
        after = AfterCopies(scene.context(), work, limit=1)
        first, second, third = (Item(row=row) for row in rows[:3])
        me = anyio.get_current_task().id
        after.hold()
        await after.carry_on(first)  # held: waits in line, nobody works on it
        assert Recorded.runs == []
        assert after.waiting() == 1
        after.release()  # a worker task for the line (first)
        await after.carry_on(second)  # the line is full (limit 1): waits behind first
        assert after.waiting() == 2
    # Both served by the worker task of release(), in their order; none by this task.
    assert [key for key, _ in Recorded.runs] == [first.key, second.key]
    assert all(task != me for _, task in Recorded.runs)
    Recorded.runs = []
    async with anyio.create_task_group() as work:
        after = AfterCopies(scene.context(), work, limit=1)
        await after.carry_on(third)  # room: this task is the worker
    assert Recorded.runs == [(third.key, me)]
    assert after.workers == 0


async def test_a_fresh_listing_is_read_without_a_turn_of_the_event_loop() -> None:
    """A listing younger than the age asked is given at once, not behind the key's lock (an
    anyio lock yields to the loop even when free: once per copy request); a stale one is
    taken again."""
    scene = scene_of(1)
    clouds: dict[str, TenantCloud] = dict(scene.clouds())
    index = TargetIndex(clouds, scene.clock.now, settle=900.0)
    item = Item(row=scene.rows[0])
    await index.listing(target_key(item))
    assert index.listings_taken == 1
    reached = False
    with anyio.CancelScope() as scope:
        scope.cancel()  # any turn of the loop, any checkpoint, would end the block here
        found = await index.find(item)
        reached = True
    assert reached
    assert found is None
    assert index.listings_taken == 1
    scene.clock.advance(901.0)
    assert await index.find(item) is None
    assert index.listings_taken == 2


class Polls:
    """A tenant's cloud that counts the answered polls of each job."""

    def __init__(self, inner: TenantCloud, answered: dict[str, int]) -> None:
        self.inner = inner
        self.answered = answered

    async def get_job(self, *args: Any, **kwargs: Any) -> Any:
        job = await self.inner.get_job(*args, **kwargs)
        self.answered[job.job_id] = self.answered.get(job.job_id, 0) + 1
        return job

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_every_answered_poll_is_counted_on_its_item() -> None:
    """The drive counts its polls and puts them on the item once (not a copy of the item per
    poll): the saved count is the cloud's."""
    scene = scene_of(3)
    answered: dict[str, int] = {}
    result = await scene.run(wrap=lambda cloud: Polls(cloud, answered))
    assert result.exit_code == ExitCode.OK
    polls = {item.job_id: item.polls for item in scene.items()}
    assert polls == answered
    assert min(answered.values()) >= 1
