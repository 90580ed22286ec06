"""A second SIGTERM/SIGINT ends the run at once, even while the first one's graceful stop is
still saving (a stuck disk): the run does not wait for it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

import anyio
import pytest

from orchestrator.cli.common import exit_code_of, leaves_of
from orchestrator.commands.common import StoppedAtOnce
from orchestrator.commands.run import execute_run
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Item
from orchestrator.simulator.inmemory import in_memory_clouds
from orchestrator.state.checkpoint import CheckpointStore
from orchestrator.state.meta import RunMeta
from tests.inprocess import LocalCloud, sigterm_among_the_copies
from tests.virtual_clock import VirtualClock

SECOND: list[int] = []  # the second signal, sent from the stuck save


class StuckEnd(CheckpointStore):
    """The save of the run's outcome never ends (after sending the second signal)."""

    async def commit(self, items: Iterable[Item] = (), meta: RunMeta | None = None) -> None:
        if meta is not None and meta.last_exit is not None:
            os.kill(os.getpid(), SECOND[0])
            await anyio.sleep_forever()
        await super().commit(items, meta)


@pytest.mark.anyio
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_ends_the_run_at_once(
    local_cloud: LocalCloud, caught: list[int], second: signal.Signals
) -> None:
    cloud = local_cloud
    cloud.populate(tenants=2, per_tenant=10)
    cloud.start()
    world = cloud.world
    assert world is not None
    request = cloud.run_request()
    clock = VirtualClock()
    SECOND[:] = [second]

    async def run() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(clock.autojump)
            await execute_run(
                request,
                clouds=in_memory_clouds(world),
                store=StuckEnd,
                clock=clock,
                on_change=sigterm_among_the_copies(),
            )

    with anyio.fail_after(20), pytest.raises(BaseExceptionGroup) as ended:
        await run()
    assert caught == []  # both heard by the run
    leaves = leaves_of(ended.value)
    assert [type(e) for e in leaves] == [StoppedAtOnce]
    assert exit_code_of(leaves) == ExitCode.LATER  # 75: run again later
