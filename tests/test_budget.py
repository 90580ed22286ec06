"""The request budget at scale: only the wire counts, and a key's budget holds under the
gateway's throttling. The engine runs the real ``ImsClient`` (signing, budgets, retries) on
virtual time against the simulator's world behind the transport seam (``world_transport``)."""

from __future__ import annotations

import random
from dataclasses import replace

import anyio

from orchestrator.config import Config, Endpoints, TenantConfig
from orchestrator.core.cloud import SEND_STOP, STOPPED, CloudError, CopyRequest, ErrorKind
from orchestrator.core.credentials import Credentials
from orchestrator.core.model import Item, Phase
from orchestrator.core.outcome import merge_list
from orchestrator.engine.context import RunContext, SubmitStop
from orchestrator.engine.lifecycle import Driver
from orchestrator.engine.scheduler import Engine, RunOptions, store_merged
from orchestrator.engine.window import Window
from orchestrator.ims.client import ImsClient
from orchestrator.ims.ratelimit import RateLimits
from orchestrator.simulator.throttle import KeyRateGate
from tests.engine_harness import CONFIG, SOURCE, TARGET, TIMING, Scene
from tests.world_transport import IAM, IMS, WorldTransport


async def run_through_client(
    scene: Scene, config: Config, limits: RateLimits, transport: WorldTransport
) -> RunContext:
    clouds = {
        tenant: ImsClient(
            transport,
            TenantConfig(name=tenant),
            Credentials(f"AK{account}", f"SK{account}"),
            config,
            limits,
            scene.clock,
            rng=random.Random(7),
        )
        for tenant, account in scene.tenant_account.items()
    }
    ctx = RunContext(config, scene.clock, scene.store, clouds, rng=random.Random(1))
    items = merge_list(scene.store.items, scene.rows)
    async with anyio.create_task_group() as group:
        group.start_soon(scene.clock.autojump)
        await store_merged(scene.store, items)
        await Engine(ctx, RunOptions()).run(items)
        group.cancel_scope.cancel()
    return ctx


def crowd(tenants: int, per_tenant: int) -> Scene:
    scene = Scene()
    for n in range(tenants):
        scene.account(f"t{n}")
        for _ in range(per_tenant):
            scene.row(f"t{n}", 1.0)
    return scene


SIM_CONFIG = replace(
    CONFIG,
    endpoints=Endpoints(ims=IMS, iam=IAM),
    timing=replace(TIMING, request_timeout=5.0),
)


async def test_a_long_queue_for_the_budget_is_never_an_unknown_outcome() -> None:
    """300 copies of 60 tenants at once behind a 3/s host cap, 30 requests in flight and a
    cloud that takes 2 s to answer (request_timeout 5): the POSTs wait far longer than the
    timeout before the wire, yet none is an unknown outcome and the cloud receives exactly
    one copy request per item. (``scripts/bench many`` runs 20,000.)"""
    scene = crowd(60, 5)
    config = replace(SIM_CONFIG, host_requests_per_second=3.0)
    limits = RateLimits(config.requests_per_second, scene.clock, host_rate=3.0, in_flight=30)
    ctx = await run_through_client(
        scene, config, limits, WorldTransport(scene.world, scene.clock, 2.0)
    )
    truth = scene.truth()
    assert ctx.counters.reconciliations == 0
    assert {item.phase for item in scene.items()} == {Phase.SUCCEEDED}
    assert len(truth.submissions) == 300
    assert set(truth.submissions.values()) == {1}


async def test_the_budget_holds_under_the_gateways_per_key_throttling() -> None:
    """A gateway allowing 3 requests/s per key, a client configured for 20: the 429s lower the
    key's rate, no request goes inside an announced Retry-After, and every copy is made once."""
    scene = crowd(4, 5)
    config = replace(SIM_CONFIG, requests_per_second=20.0)
    limits = RateLimits(20.0, scene.clock)
    gate = KeyRateGate(rate=3)
    transport = WorldTransport(scene.world, scene.clock, 0.05, gate)
    await run_through_client(scene, config, limits, transport)
    truth = scene.truth()
    assert gate.refusals > 0
    assert gate.inside_retry_after == 0
    assert {item.phase for item in scene.items()} == {Phase.SUCCEEDED}
    assert set(truth.submissions.values()) == {1}


async def test_a_copy_waiting_for_the_budget_when_the_stop_comes_is_not_sent() -> None:
    """A POST queued behind a Retry-After pause is taken back unsent by a stop: NOT_SENT, and
    the cloud never receives it, not even after the pause."""
    scene = crowd(1, 1)
    limits = RateLimits(50.0, scene.clock)
    transport = WorldTransport(scene.world, scene.clock, 0.05)
    tenant = TenantConfig(name="t0", project_ids={SOURCE: "p"})
    client = ImsClient(
        transport, tenant, Credentials("AKt0", "SKt0"), SIM_CONFIG, limits, scene.clock
    )
    limits.for_key("AKt0", f"ims.{SOURCE}.sim.test").refused(600.0)
    stop = SubmitStop()
    request = CopyRequest("c", "", TARGET, TARGET, "agency")
    error: CloudError | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(scene.clock.autojump)

        async def stop_soon() -> None:
            await scene.clock.sleep(30.0)
            stop.set()

        group.start_soon(stop_soon)
        try:
            token = SEND_STOP.set(stop)
            try:
                await client.copy_image(SOURCE, scene.rows[0].image_id, request)
            finally:
                SEND_STOP.reset(token)
        except CloudError as exc:
            error = exc
        await scene.clock.sleep(1200.0)  # long past the pause
        group.cancel_scope.cancel()
    assert error is not None
    assert (error.kind, error.code) == (ErrorKind.NOT_SENT, STOPPED)
    assert transport.sent == 0
    assert scene.truth().requests.get("copy", 0) == 0


def test_a_poll_near_its_jobs_predicted_end_goes_before_far_off_ones() -> None:
    """A poll's budget priority is the time to its job's predicted end: a job about to end
    goes before one just started and before one with no prediction."""
    scene = crowd(1, 1)
    window = Window("a", 5, backoff_min=1.0, backoff_max=10.0)
    driver = Driver(scene.context(), window, Item(row=scene.rows[0]))
    now = scene.clock.now()
    near = driver._poll_priority(now - 590.0, 600.0)
    far = driver._poll_priority(now - 10.0, 600.0)
    unknown = driver._poll_priority(now, None)
    assert near < far
    assert near < unknown
