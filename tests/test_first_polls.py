"""A resumed run polls each of its copies in flight once before it starts checking the copies
made (engine/firstpolls.py): the checks wait, at most ``poll_max + request_timeout`` after the
probing, and every one of them still runs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from orchestrator.core.cloud import TenantCloud
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Phase
from orchestrator.engine.scheduler import RunOptions
from tests.engine_harness import CONFIG, Scene

TENANTS = ("t0", "t1", "t2")
CHECKS = 12  # copies made per tenant by the stopped run, not yet verified
COPIES = 2  # copies per tenant still running when it stopped
AFTER = frozenset({"image_members", "image_tags", "add_image_tags", "update_image"})


class Calls:
    """A tenant's cloud that notes, in one list for all tenants, each job poll and each call
    after a copy, with the virtual time; the jobs in ``stalled`` answer only after ``stall``."""

    def __init__(
        self, inner: TenantCloud, log: list[tuple[float, str, str]], scene: Scene, **stall: Any
    ) -> None:
        self.inner = inner
        self.log = log
        self.scene = scene
        self.stalled: set[str] = stall.get("stalled", set())
        self.stall: float = stall.get("stall", 0.0)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            now = self.scene.clock.now()
            if name == "get_job":
                self.log.append((now, "poll", args[1]))
                if args[1] in self.stalled:
                    self.stalled.discard(args[1])
                    await self.scene.clock.sleep(self.stall)
            elif name in AFTER or (name == "list_images" and "image_id" in kwargs):
                self.log.append((now, "check", name))
            return await method(*args, **kwargs)

        return call


async def stopped_with_checks_and_copies() -> tuple[Scene, set[str]]:
    """Each tenant: CHECKS copies made but not verified, COPIES copies still running (their
    job ids are returned)."""
    scene = Scene()
    for tenant in TENANTS:
        scene.account(tenant)
        for _ in range(CHECKS):
            scene.row(tenant, 1.0)
    assert (await scene.run()).exit_code == ExitCode.OK
    made = scene.items()
    for tenant in TENANTS:
        for _ in range(COPIES):
            scene.row(tenant, 40.0)  # a copy of about 15 minutes
    await scene.run(options=RunOptions(deadline_at=scene.clock.now() + 1.0))
    await scene.store.commit([replace(item, phase=Phase.VERIFYING, verify="") for item in made])
    running = {item.job_id for item in scene.items() if item.phase == Phase.RUNNING}
    assert len(running) == len(TENANTS) * COPIES
    assert None not in running
    return scene, {job for job in running if job is not None}


async def resume(scene: Scene, log: list[tuple[float, str, str]], **stall: Any) -> float:
    """The resumed run, to its end, through :class:`Calls`; its start time."""
    started = scene.clock.now()
    result = await scene.run(wrap=lambda cloud: Calls(cloud, log, scene, **stall))
    assert result.exit_code == ExitCode.OK
    assert {item.phase for item in scene.items()} == {Phase.SUCCEEDED}
    assert {item.verify for item in scene.items()} == {"ok"}
    assert scene.truth().duplicates == ()
    return started


async def test_every_copy_in_flight_is_polled_before_the_first_check() -> None:
    """The checks start once the last copy is polled (poll_min after its probe), not later."""
    scene, running = await stopped_with_checks_and_copies()
    log: list[tuple[float, str, str]] = []
    started = await resume(scene, log)
    first_check = next(at for at, (_, kind, _) in enumerate(log) if kind == "check")
    polled_first = {job for _, kind, job in log[:first_check] if kind == "poll"}
    assert polled_first == running
    assert log[first_check][0] - started < 4 * CONFIG.timing.poll_min  # the bound: 330 s
    assert sum(kind == "check" for _, kind, _ in log) >= len(TENANTS) * CHECKS


async def test_a_copy_whose_poll_stalls_holds_the_checks_no_longer_than_the_bound() -> None:
    """One copy's first poll takes an hour to answer: the checks start poll_max +
    request_timeout after the probing, not after the hour."""
    scene, running = await stopped_with_checks_and_copies()
    log: list[tuple[float, str, str]] = []
    stalled = min(running)
    started = await resume(scene, log, stalled={stalled}, stall=3600.0)
    first_check = next(at for at, kind, _ in log if kind == "check")
    bound = CONFIG.timing.poll_max + CONFIG.timing.request_timeout
    assert bound <= first_check - started < bound + 60.0
    assert {job for _, kind, job in log if kind == "poll"} >= running
