"""A stop with hundreds of copy intents waiting to be written (a 100,000-item run has thousands)
ends in a few journal writes, sends no copy request, and leaves every item resumable.

The journal write that carries the first intents is held (a slow disk, a compaction under way)
while the other drivers queue theirs behind it; the stop comes; the write is let go. Judged on
the journal writes the store makes, the lines they carry, the in-memory cloud's request record
and the world's truth after a resumed run: counts, never times.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread

from orchestrator.commands.run import RunSummary, execute_run
from orchestrator.core.model import Item, Phase
from orchestrator.core.outcome import Stop
from orchestrator.engine.context import RunContext
from orchestrator.simulator.inmemory import in_memory_clouds
from orchestrator.state.checkpoint import JOURNAL, CheckpointStore, read_snapshot
from orchestrator.state.codec import item_from_dict
from orchestrator.state.store import StoreError
from tests.inprocess import LocalCloud

TENANTS, PER_TENANT, CAP = 100, 6, 5
STAGGER = 5  # turns of the event loop over which the first intents come


class HeldWrite:
    """The first journal write carrying a copy intent waits for :meth:`release`."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.released = threading.Event()
        self.writes: list[list[dict[str, object]]] = []  # every write's lines, in order


class GatedStore(CheckpointStore):
    def __init__(self, state_dir: Path, gate: HeldWrite) -> None:
        super().__init__(state_dir)
        self.gate = gate
        self.intents = 0

    async def commit_intents(self, items: Sequence[Item]) -> bool:
        """The drivers' intents come over a few turns of the event loop (in a run, the slots
        free at different times), not all in the turn the first write starts: some are
        written by the held write, the others queue behind it."""
        self.intents += 1
        for _ in range(self.intents % STAGGER):
            await anyio.lowlevel.checkpoint()
        return await super().commit_intents(items)

    def _append(self, lines: list[bytes]) -> None:
        decoded = [json.loads(line) for line in lines]
        self.gate.writes.append(decoded)
        if not self.gate.reached.is_set() and any(_phase(line) == "submitting" for line in decoded):
            self.gate.reached.set()
            if not self.gate.released.wait(timeout=60):
                raise StoreError("the held write was never released")
        super()._append(lines)


def _phase(line: dict[str, object]) -> object:
    item = line.get("item")
    return item.get("phase") if isinstance(item, dict) else None


def test_a_stop_behind_a_slow_write_withdraws_the_waiting_intents(
    local_cloud: LocalCloud,
) -> None:
    cloud = local_cloud
    cloud.populate(tenants=TENANTS, per_tenant=PER_TENANT)
    cloud.start()
    world = cloud.world
    assert world is not None
    gate = HeldWrite()
    stores: list[GatedStore] = []
    marks: dict[str, int] = {}

    def make_store(path: Path) -> CheckpointStore:
        stores.append(GatedStore(path, gate))
        return stores[-1]

    async def stop_behind_the_held_write(ctx: RunContext) -> None:
        await anyio.to_thread.run_sync(gate.reached.wait, 60)
        store = stores[0]
        for _ in range(100_000):  # until every slot's driver has queued its intent
            queued = sum(1 for item in store.items.values() if item.phase == Phase.SUBMITTING)
            if queued == TENANTS * CAP:
                break
            await anyio.lowlevel.checkpoint()
        marks["writes"] = len(gate.writes)  # the held write included
        marks["requests"] = len(world.request_log)
        ctx.request_stop(Stop.signal("SIGTERM"))
        gate.released.set()

    async def first_run() -> RunSummary:
        summaries: list[RunSummary] = []
        async with anyio.create_task_group() as group:

            def on_start(ctx: RunContext, _chosen: list[Item]) -> None:
                group.start_soon(stop_behind_the_held_write, ctx)

            summary = await execute_run(
                cloud.run_request(),
                clouds=in_memory_clouds(world),
                store=make_store,
                clock=cloud.clock,
                on_start=on_start,
                handle_signals=False,
            )
            summaries.append(summary)
        return summaries[0]

    summary = anyio.run(first_run)

    assert summary.exit_code == 75, summary.reason
    assert "signal SIGTERM" in summary.reason
    # No copy request after the stop (none at all: no intent was durable before it).
    after = world.request_log[marks["requests"] :]
    assert [r for r in after if r.kind == "copy"] == []
    # The held write carried some intents; the others were withdrawn, never written.
    held = [line for line in gate.writes[marks["writes"] - 1] if _phase(line) == "submitting"]
    later = gate.writes[marks["writes"] :]
    assert 0 < len(held) < TENANTS * CAP
    assert [line for write in later for line in write if _phase(line) == "submitting"] == []
    # The held intents' "not sent" attempts and the run's end: a few writes, not one per item.
    assert len(later) <= 3, [len(write) for write in later]
    assert sum(len(write) for write in later) <= len(held) + 1
    # On disk: every item pending, the held ones with a new attempt (nothing to reconcile).
    snap = read_snapshot(cloud.state_dir, item_from_dict)
    assert snap is not None
    items: dict[str, Item] = snap["items"]
    assert {item.phase for item in items.values()} == {Phase.PENDING}
    again = [item for item in items.values() if item.detail == "stopped before sending"]
    assert len(again) == len(held)
    assert all(item.attempt == 2 for item in again)
    assert (cloud.state_dir / JOURNAL).stat().st_size > 0  # not compacted after the signal

    # The next run resumes and finishes: each copy made once, the cap kept.
    async def resumed_run() -> RunSummary:
        return await execute_run(
            cloud.run_request(),
            clouds=in_memory_clouds(world),
            clock=cloud.clock,
            handle_signals=False,
        )

    resumed = anyio.run(resumed_run)
    assert resumed.exit_code == 0, resumed.reason
    truth = cloud.truth()
    assert truth.copies_total == TENANTS * PER_TENANT
    assert truth.duplicates == ()
    assert max(truth.max_in_flight.values()) <= CAP
