"""A resumed run follows its copies in flight early, and still submits only once every window is
whole: a slow probe of one tenant neither delays another tenant's polls nor lets an account
exceed its cap (design I1)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio

from orchestrator.core.cloud import TenantCloud
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Item, Phase
from orchestrator.core.outcome import Stop, merge_list
from orchestrator.core.units import GIB
from orchestrator.engine.scheduler import (
    Engine,
    RunOptions,
    RunResult,
    store_merged,
)
from tests.engine_harness import Scene
from tests.virtual_clock import VirtualClock

SLOW = 1000.0  # seconds a slow tenant's probe takes


class SlowProbe:
    """A tenant's cloud whose credential probe takes ``SLOW`` virtual seconds to answer."""

    def __init__(self, inner: TenantCloud, clock: VirtualClock) -> None:
        self.inner = inner
        self.clock = clock
        self.probed_at: float | None = None

    async def probe(self, region: str) -> str:
        await self.clock.sleep(SLOW)
        self.probed_at = self.clock.now()
        return await self.inner.probe(region)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def resume_with_slow_probe(
    scene: Scene, slow: str, *, stop_after: float | None = None, **extra: Any
) -> tuple[Engine, SlowProbe, float, RunResult]:
    """Run the scene's list again with ``slow``'s probe slow (and a stop asked for after
    ``stop_after`` seconds); return the engine, the slow cloud, the start time and the result.
    ``extra``: more of the run's context (``on_change``)."""
    ctx = scene.context(**extra)
    cloud = SlowProbe(ctx.clouds[slow], scene.clock)
    ctx = replace(ctx, clouds={**ctx.clouds, slow: cloud})  # its target index reads it too
    engine = Engine(ctx, RunOptions())
    started = scene.clock.now()

    async def stop() -> None:
        assert stop_after is not None
        await scene.clock.sleep(stop_after)
        ctx.request_stop(Stop.signal("SIGTERM"))

    async with anyio.create_task_group() as group:
        group.start_soon(scene.clock.autojump)
        if stop_after is not None:
            group.start_soon(stop)
        items = merge_list(scene.store.items, scene.rows)
        await store_merged(scene.store, items)
        result = await engine.run(items)
        group.cancel_scope.cancel()
    scene.last_ctx = ctx
    return engine, cloud, started, result


async def in_flight_after_a_stop(scene: Scene) -> None:
    """A first run that submits what it can and stops at once (its copies stay in flight)."""
    await scene.run(options=RunOptions(deadline_at=scene.clock.now() + 1.0))
    assert any(item.phase.holds_slot for item in scene.items())


async def test_copies_in_flight_are_polled_before_a_slow_probe_of_another_tenant_ends() -> None:
    scene = Scene()
    for tenant in ("fast", "slow"):
        scene.account(tenant)
        for n in range(3):
            scene.row(tenant, 10 + n)
    await in_flight_after_a_stop(scene)
    _, cloud, started, result = await resume_with_slow_probe(scene, "slow")
    assert result.exit_code == ExitCode.OK
    first_poll = scene.last_ctx.counters.first_poll_at
    assert first_poll is not None
    assert cloud.probed_at is not None
    assert first_poll - started < 60.0 < SLOW <= cloud.probed_at - started
    assert scene.truth().duplicates == ()


async def test_checks_after_a_copy_begin_before_a_slow_probe_of_another_tenant_ends() -> None:
    """Items stopped while their copy was verified go on as soon as their own tenant's probe
    answers, not once every tenant is probed and every target region listed."""
    scene = Scene()
    for tenant in ("fast", "slow"):
        scene.account(tenant)
        for n in range(3):
            scene.row(tenant, 10 + n)
    assert (await scene.run()).exit_code == ExitCode.OK
    fast = [item for item in scene.items() if item.row.tenant == "fast"]
    await scene.store.commit([replace(item, phase=Phase.VERIFYING, verify="") for item in fast])
    scene.row("slow", 20)  # work for the slow tenant: it is probed
    done: dict[str, float] = {}

    def seen(item: Item) -> None:
        if item.phase == Phase.SUCCEEDED and item.row.tenant == "fast":
            done[item.key] = scene.clock.now()

    _, cloud, started, result = await resume_with_slow_probe(scene, "slow", on_change=seen)
    assert result.exit_code == ExitCode.OK
    assert cloud.probed_at is not None
    assert sorted(done) == sorted(item.key for item in fast)
    assert max(done.values()) - started < 60.0 < SLOW <= cloud.probed_at - started
    assert {item.verify for item in scene.items() if item.row.tenant == "fast"} == {"ok"}


async def test_nothing_is_submitted_before_every_tenant_of_an_account_is_probed() -> None:
    """Two config tenants, one account: the slow one's 3 copies in flight count against the
    account's 5 slots, so the fast one may add only 2 (and no IMG.0060 refusal is met)."""
    scene = Scene()
    scene.account("acc")
    scene.tenant("fast", "acc")
    scene.tenant("slow", "acc")
    slow_rows = [scene.row("slow", 10 + n) for n in range(3)]
    await scene.run(rows=slow_rows, options=RunOptions(deadline_at=scene.clock.now() + 1.0))
    assert sum(item.phase.holds_slot for item in scene.items()) == 3
    # The fast tenant's rows were checked by an earlier run: nothing delays their submission
    # but the rule under test.
    fast_rows = [scene.row("fast", 20 + n) for n in range(6)]
    await scene.store.commit(
        [
            Item(row=row, copy_name=f"copy-{row.line}", size_bytes=row.line * GIB)
            for row in fast_rows
        ]
    )
    engine, cloud, _, result = await resume_with_slow_probe(scene, "slow")
    assert result.exit_code == ExitCode.OK
    assert cloud.probed_at is not None
    fast = [i for i in scene.items() if i.row.tenant == "fast"]
    assert all(i.phase == Phase.SUCCEEDED and i.attempt == 1 for i in fast)
    assert min(i.submitted_at or 0.0 for i in fast) >= cloud.probed_at
    assert scene.last_ctx.counters.back_pressure == 0
    assert [w.max_in_use for w in engine.windows.values()] == [5]
    assert scene.truth().max_in_flight == {"acc": 5}


async def test_a_stop_during_the_probes_ends_the_run_at_once() -> None:
    """SIGTERM while a tenant's probe hangs: the run ends within seconds (design I8), having
    submitted nothing, and its copies in flight stay as they were for the next run."""
    scene = Scene()
    for tenant in ("fast", "slow"):
        scene.account(tenant)
        for n in range(3):
            scene.row(tenant, 10 + n)
    _, cloud, started, result = await resume_with_slow_probe(scene, "slow", stop_after=5.0)
    assert result.exit_code == ExitCode.LATER
    assert scene.clock.now() - started < 60.0
    assert cloud.probed_at is None
    assert scene.truth().copies_total == 0
