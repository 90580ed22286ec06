"""``execute_run`` with its collaborators passed in: the in-memory cloud, a store, a clock.

No CLI and no process: the run's own guarantees, judged on the simulator's World.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import anyio

from orchestrator.commands.run import execute_run
from orchestrator.core.model import Item, Phase
from orchestrator.simulator.inmemory import in_memory_clouds
from orchestrator.state.checkpoint import CheckpointStore
from orchestrator.state.meta import RunMeta
from orchestrator.state.store import StoreError
from tests.inprocess import LocalCloud
from tests.virtual_clock import VirtualClock


class IntentsCannotBeSaved(CheckpointStore):
    """A checkpoint whose disk fills up at the first intent to copy (phase SUBMITTING)."""

    async def commit(self, items: Iterable[Item] = (), meta: RunMeta | None = None) -> None:
        items = list(items)
        if any(item.phase == Phase.SUBMITTING for item in items):
            raise StoreError("disk full (injected)")
        await super().commit(items, meta)

    async def commit_intents(self, items: Sequence[Item]) -> bool:
        if any(item.phase == Phase.SUBMITTING for item in items):
            raise StoreError("disk full (injected)")
        return await super().commit_intents(items)


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


async def test_no_copy_is_sent_unless_its_intent_was_saved(local_cloud: LocalCloud) -> None:
    """The store fails when the first intent is saved: the run stops with it, nothing POSTed."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=3)
    cloud.start()
    assert cloud.world is not None
    request = cloud.run_request()
    clock = VirtualClock()
    failures: list[BaseException] = []
    async with anyio.create_task_group() as group:
        group.start_soon(clock.autojump)
        try:
            await execute_run(
                request,
                clouds=in_memory_clouds(cloud.world),
                store=IntentsCannotBeSaved,
                clock=clock,
                handle_signals=False,
            )
        except* StoreError as raised:  # one per task that tried to save an intent
            failures.extend(leaves(raised))
        group.cancel_scope.cancel()
    assert failures
    assert all("injected" in str(failure) for failure in failures)
    truth = cloud.truth()
    assert truth.copies_total == 0
    assert "copy" not in truth.requests
    assert truth.requests  # the run did ask the cloud (preflight) before the intent
