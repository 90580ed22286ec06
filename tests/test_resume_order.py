"""A resumed run polls its copies in flight first, however many copies it has to check.

The checks after a copy (verify, carry) wait behind every poll for the key's request budget and
for a connection slot (``AFTER_COPY``): a resume that finds thousands of copies made but not
checked, and a few still copying, answers its first poll within seconds, and still checks every
copy. The engine runs the real ``ImsClient`` on virtual time against the simulator's world."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from orchestrator.config import Endpoints
from orchestrator.core.cloud import AFTER_COPY, TenantCloud
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Phase
from orchestrator.core.outcome import merge_list
from orchestrator.engine.context import RunContext
from orchestrator.engine.scheduler import Engine, RunOptions, store_merged
from orchestrator.ims.ratelimit import RateLimits, Slots
from tests.engine_harness import CONFIG as CONFIG_MEMORY
from tests.engine_harness import Scene
from tests.test_budget import SIM_CONFIG, crowd, run_through_client
from tests.world_transport import IAM, ONE_HOST_IMS, WorldTransport

CHECKS = 40  # copies made by the stopped run, not yet verified
# Every region behind one host (as in scripts/bench): the checks' reads in the target region and
# the polls in the source region meet in one budget and one set of connection slots.
CONFIG = replace(SIM_CONFIG, endpoints=Endpoints(ims=ONE_HOST_IMS, iam=IAM))


async def stopped_with_checks_and_a_copy_in_flight() -> tuple[Scene, str]:
    """A list whose CHECKS copies are made but not verified, and one copy still running."""
    scene = crowd(1, CHECKS)
    assert (await scene.run()).exit_code == ExitCode.OK
    made = scene.items()
    running = scene.row("t0", 30.0)  # a copy of about 12 minutes
    await scene.run(options=RunOptions(deadline_at=scene.clock.now() + 1.0))
    await scene.store.commit([replace(item, phase=Phase.VERIFYING, verify="") for item in made])
    assert sum(item.phase.holds_slot for item in scene.items()) == 1
    return scene, f"{running.tenant}/{running.image_id}/{running.target_region}"


@pytest.mark.parametrize(
    ("rate", "in_flight", "latency"),
    [
        (1.0, 100, 0.05),  # the key's budget is the bound: 1 request a second
        (1000.0, 1, 1.0),  # a connection slot is: one request on the wire, 1 s each
    ],
    ids=["budget", "slots"],
)
async def test_the_copy_in_flight_is_polled_before_the_checks_of_copies_made(
    rate: float, in_flight: int, latency: float
) -> None:
    """40 checks (a listing and a members read each, ~80 s of the bound) and one copy in
    flight: its first poll is answered within seconds of the start, not after the checks."""
    scene, running = await stopped_with_checks_and_a_copy_in_flight()
    limits = RateLimits(rate, scene.clock, burst=1.0, in_flight=in_flight)
    started = scene.clock.now()
    ctx = await run_through_client(
        scene, CONFIG, limits, WorldTransport(scene.world, scene.clock, latency)
    )
    first_poll = ctx.counters.first_poll_at
    assert first_poll is not None
    assert first_poll - started < 20.0  # poll_min is 5 s; the checks alone take >= 80 s
    items = scene.items()
    assert {item.phase for item in items} == {Phase.SUCCEEDED}
    assert {item.verify for item in items if item.key != running} == {"ok"}
    assert scene.truth().duplicates == ()


async def test_a_freed_slot_goes_to_the_poll_before_a_crowd_of_checks() -> None:
    """Slots are handed by priority, then arrival: checks queued first still come after."""
    slots = Slots(1)
    slots.acquire_nowait()
    order: list[str] = []

    async def request(name: str, priority: float) -> None:
        await slots.acquire(priority)
        order.append(name)
        slots.release()

    async with anyio.create_task_group() as group:
        for n in range(3):
            group.start_soon(request, f"check{n}", AFTER_COPY)
            await anyio.lowlevel.checkpoint()
        group.start_soon(request, "poll", 12.0)
        await anyio.lowlevel.checkpoint()
        slots.release()
    assert order == ["poll", "check0", "check1", "check2"]
    assert slots.value == 1


async def test_a_slot_handed_to_a_waiter_being_cancelled_goes_on_to_the_next() -> None:
    """A waiter handed the slot while its cancellation is on the way passes it on: no slot is
    lost (a lost one would leave the next waiter hanging)."""
    slots = Slots(1)
    slots.acquire_nowait()
    got: list[str] = []
    first = anyio.CancelScope()

    async def waiter(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await slots.acquire(1.0)
            got.append(name)
            slots.release()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(waiter, "first", first)
            await anyio.lowlevel.checkpoint()
            group.start_soon(waiter, "second", anyio.CancelScope())
            await anyio.lowlevel.checkpoint()
            first.cancel()  # "first" is being cancelled (it has not run since)...
            slots.release()  # ...when the slot is handed to it
    assert got == ["second"]
    assert slots.value == 1


class Recording:
    """A tenant's cloud that notes the budget priority each call after a copy asks for."""

    AFTER = frozenset({"image_members", "image_tags", "add_image_tags", "update_image"})

    def __init__(self, inner: TenantCloud) -> None:
        self.inner = inner
        self.priorities: list[tuple[str, object]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if name in self.AFTER or (name == "list_images" and "image_id" in kwargs):
                self.priorities.append((name, kwargs.get("priority")))
            return await method(*args, **kwargs)

        return call


async def test_every_call_after_a_copy_goes_behind_the_polls() -> None:
    """Verify and carry (the copy read, the members, the source's tags read, the tags written,
    min_ram/max_ram patched) all ask the budget for AFTER_COPY."""
    scene = Scene()
    scene.account("t0")
    scene.row("t0", 1, tags=["env.prod"], min_ram=1024, max_ram=4096)
    cloud = Recording(scene.clouds()["t0"])
    ctx = RunContext(CONFIG_MEMORY, scene.clock, scene.store, {"t0": cloud})
    items = merge_list(scene.store.items, scene.rows)
    async with anyio.create_task_group() as group:
        group.start_soon(scene.clock.autojump)
        await store_merged(scene.store, items)
        result = await Engine(ctx, RunOptions()).run(items)
        group.cancel_scope.cancel()
    assert result.exit_code == ExitCode.OK
    assert {name for name, _ in cloud.priorities} == Recording.AFTER | {"list_images"}
    assert {priority for _, priority in cloud.priorities} == {AFTER_COPY}
