"""While a run goes, the cyclic collector's young generation is collected far less often
(state/gcpause.py RUN_THRESHOLDS: every request's short-lived containers are freed by
reference counting, the collector found nothing among them); after the run, the caller's
thresholds are back, also when the run fails."""

from __future__ import annotations

import gc
from collections.abc import Iterable

import anyio
import pytest

from orchestrator.commands.run import execute_run
from orchestrator.core.model import Item
from orchestrator.simulator.inmemory import in_memory_clouds
from orchestrator.state.checkpoint import CheckpointStore
from orchestrator.state.gcpause import RUN_THRESHOLDS, run_thresholds
from orchestrator.state.meta import RunMeta
from tests.inprocess import LocalCloud
from tests.virtual_clock import VirtualClock

SEEN: list[tuple[int, int, int]] = []  # the thresholds at each commit of a run


class ThresholdWatch(CheckpointStore):
    async def commit(self, items: Iterable[Item] = (), meta: RunMeta | None = None) -> None:
        SEEN.append(gc.get_threshold())
        await super().commit(items, meta)


def test_the_thresholds_are_restored_after_the_block_even_on_an_error() -> None:
    before = gc.get_threshold()
    during: list[tuple[int, int, int]] = []

    def fails() -> None:
        with run_thresholds():
            during.append(gc.get_threshold())
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fails()
    assert during == [RUN_THRESHOLDS]
    assert gc.get_threshold() == before


@pytest.mark.anyio
async def test_a_run_collects_less_often_while_it_goes_and_restores_after(
    local_cloud: LocalCloud,
) -> None:
    cloud = local_cloud
    cloud.populate(tenants=2, per_tenant=5)
    cloud.start()
    assert cloud.world is not None
    request = cloud.run_request()
    clock = VirtualClock()
    before = gc.get_threshold()
    assert before != RUN_THRESHOLDS
    SEEN.clear()
    async with anyio.create_task_group() as group:
        group.start_soon(clock.autojump)
        summary = await execute_run(
            request, clouds=in_memory_clouds(cloud.world), store=ThresholdWatch, clock=clock
        )
        group.cancel_scope.cancel()
    assert SEEN
    assert set(SEEN) == {RUN_THRESHOLDS}
    assert gc.get_threshold() == before
    assert summary.state_dir.is_dir()  # the run went its course (its outcome is not the point)
