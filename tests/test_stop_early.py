"""A signal while the run starts (the list loading, the state opening) stops it like any other:
exit 75, nothing submitted, instead of dying of the signal (-15)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from orchestrator.commands.run import execute_run
from orchestrator.simulator.inmemory import in_memory_clouds
from orchestrator.state.checkpoint import CheckpointStore
from tests.inprocess import LocalCloud
from tests.virtual_clock import VirtualClock


def signalled_store(path: Path) -> CheckpointStore:
    """The state dir opens while a SIGTERM arrives (a signal during start-up)."""
    os.kill(os.getpid(), signal.SIGTERM)
    return CheckpointStore(path)


@pytest.mark.anyio
async def test_a_signal_during_start_up_exits_75(
    local_cloud: LocalCloud, caught: list[int]
) -> None:
    """SIGTERM while the state dir opens: exit 75 "signal SIGTERM", no copy submitted."""
    cloud = local_cloud
    cloud.populate(tenants=2, per_tenant=2)
    cloud.start()
    assert cloud.world is not None
    request = cloud.run_request()
    clock = VirtualClock()
    async with anyio.create_task_group() as group:
        group.start_soon(clock.autojump)
        summary = await execute_run(
            request, clouds=in_memory_clouds(cloud.world), store=signalled_store, clock=clock
        )
        group.cancel_scope.cancel()
    assert caught == []  # the run heard it, not the fallback
    assert summary.exit_code == 75, summary.reason
    assert "signal SIGTERM" in summary.reason
    assert cloud.world.truth(clock.now()).copies_total == 0
