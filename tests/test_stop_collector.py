"""From a signal to the end of the run, Python's cyclic garbage collector is paused: a full
collection at 100,000 items walks millions of objects for a second or more, and a stop frees
nothing it needs. Judged on the collector's state when the run saves its end (and after the run:
enabled again), and on the in-memory cloud's record of copies."""

from __future__ import annotations

import gc
from collections.abc import Iterable

import anyio
import pytest

from orchestrator.commands.run import execute_run
from orchestrator.core.model import Item
from orchestrator.simulator.inmemory import in_memory_clouds
from orchestrator.state.checkpoint import CheckpointStore
from orchestrator.state.meta import RunMeta
from tests.inprocess import LocalCloud, sigterm_among_the_copies
from tests.virtual_clock import VirtualClock

COLLECTING: list[bool] = []  # the collector's state at each save of a run's outcome


class EndWatch(CheckpointStore):
    """Notes whether the collector runs when the run saves its outcome (its last commit)."""

    async def commit(self, items: Iterable[Item] = (), meta: RunMeta | None = None) -> None:
        if meta is not None and meta.last_exit is not None:
            COLLECTING.append(gc.isenabled())
        await super().commit(items, meta)


@pytest.mark.anyio
async def test_the_collector_is_paused_from_the_signal_to_the_end_of_the_run(
    local_cloud: LocalCloud, caught: list[int]
) -> None:
    cloud = local_cloud
    cloud.populate(tenants=3, per_tenant=10)
    cloud.start()
    world = cloud.world
    assert world is not None
    request = cloud.run_request()
    clock = VirtualClock()
    COLLECTING.clear()
    assert gc.isenabled()
    async with anyio.create_task_group() as group:
        group.start_soon(clock.autojump)
        summary = await execute_run(
            request,
            clouds=in_memory_clouds(world),
            store=EndWatch,
            clock=clock,
            on_change=sigterm_among_the_copies(),
        )
        group.cancel_scope.cancel()

    assert caught == []  # the run heard it
    assert summary.exit_code == 75, summary.reason
    assert "signal SIGTERM" in summary.reason
    assert COLLECTING == [False]  # paused while the stopped run saved its end
    assert gc.isenabled()  # and running again once the run is over
    assert world.truth(clock.now()).copies_total < 30  # stopped among the copies
