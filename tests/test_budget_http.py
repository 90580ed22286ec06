"""The request budget over HTTP: the engine and the real client (signing, budgets, aiohttp's
pool) against the simulator's HTTP front on 127.0.0.1, whose gateway throttles each access key
(429 ``APIGW.0308`` with a ``Retry-After``, as the API gateway does). Judged on the
simulator's own record of the requests it received (``GET /_sim/requests``)."""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import aiohttp
import pytest

from orchestrator.clock import RealClock
from orchestrator.config import AfterCopy, Endpoints, TenantConfig
from orchestrator.core.credentials import Credentials
from orchestrator.core.model import Phase, Row
from orchestrator.core.outcome import merge_list
from orchestrator.core.units import GIB
from orchestrator.engine.context import RunContext
from orchestrator.engine.scheduler import Engine, RunOptions, store_merged
from orchestrator.ims.client import ImsClient
from orchestrator.ims.ratelimit import RateLimits, TokenBucket
from orchestrator.ims.transport import open_transport
from orchestrator.simulator.app import build_app, serve
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.throttle import IN_FLIGHT_GRACE
from orchestrator.simulator.world import World
from orchestrator.state.store import InMemoryStore
from tests.engine_harness import CONFIG, SOURCE, TARGET, TIMING

pytestmark = pytest.mark.timeout(120)

TENANTS, PER_TENANT = 2, 5
KEY_RATE = 4  # the gateway's requests per second per key and host
CLIENT_RATE = 20.0  # the client's configured budget: five times too many


def throttled_world() -> tuple[World, list[Row]]:
    world = World(
        WorldParams(
            seconds_per_gib=0.0, fixed_seconds=0.4, init_seconds=0.1, noise=0.0,
            regions=(SOURCE, TARGET), key_rate=KEY_RATE,
        )
    )  # fmt: skip
    rows: list[Row] = []
    for t in range(TENANTS):
        world.add_account(f"t{t}", f"dom-t{t}", f"AKt{t}", f"SKt{t}")
        for n in range(PER_TENANT):
            image = world.add_image(f"t{t}", SOURCE, {"name": f"img-{n}", "__image_size": GIB})
            rows.append(Row(len(rows) + 2, f"t{t}", str(image["id"]), SOURCE, TARGET))
    return world, rows


def sent_inside_a_retry_after(log: Sequence[Sequence[object]]) -> list[tuple[str, float]]:
    """Requests of a key that reached the host inside a Retry-After already announced to that
    key (one host here: every region and IAM are served on 127.0.0.1:port). The gateway counts
    whole seconds, so a 429 at ``t`` announces a pause until the next whole second; a request
    already on the wire when the 429 left (``IN_FLIGHT_GRACE``) does not count."""
    by_key: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for at, _method, _kind, account, status, *_ in log:
        if account is not None:
            by_key[str(account)].append((float(str(at)), int(str(status))))
    inside = []
    for account, requests in by_key.items():
        requests.sort()
        pauses = [(at, math.floor(at) + 1.0) for at, status in requests if status == 429]
        for at, _status in requests:
            if any(begun + IN_FLIGHT_GRACE <= at < until for begun, until in pauses):
                inside.append((account, at))
    return inside


async def run_over_http() -> tuple[list[list[object]], World, InMemoryStore]:
    world, rows = throttled_world()
    runner, port = await serve(build_app(world, None))
    base = f"http://127.0.0.1:{port}"
    config = replace(
        CONFIG,
        endpoints=Endpoints(ims=base + "/ims/{region}", iam=base + "/iam"),
        timing=replace(TIMING, poll_min=0.05, poll_max=1.0, backoff_max=1.0, request_timeout=5.0),
        requests_per_second=CLIENT_RATE,
        after=AfterCopy(carry_tags=False, carry_ram=False),
    )
    clock = RealClock()
    limits = RateLimits(CLIENT_RATE, clock)
    store = InMemoryStore()
    try:
        async with open_transport(config) as transport:
            clouds = {
                f"t{t}": ImsClient(
                    transport,
                    TenantConfig(name=f"t{t}"),
                    Credentials(f"AKt{t}", f"SKt{t}"),
                    config,
                    limits,
                    clock,
                    rng=random.Random(t),
                )
                for t in range(TENANTS)
            }
            ctx = RunContext(config, clock, store, clouds, rng=random.Random(1))
            items = merge_list(store.items, rows)
            await store_merged(store, items)
            await Engine(ctx, RunOptions()).run(items)
        async with (
            aiohttp.ClientSession() as session,
            session.get(base + "/_sim/requests") as response,
        ):
            log = (await response.json())["requests"]
    finally:
        await runner.cleanup()
    return log, world, store


async def test_the_budget_holds_under_the_gateways_throttling_over_http() -> None:
    """A gateway allowing 4 requests/s per key, a client configured for 20: 429s come, yet no
    request of a key reaches the host inside a Retry-After announced to that key, and every
    item is copied exactly once."""
    log, world, store = await run_over_http()
    assert sum(1 for row in log if row[4] == 429) > 0
    assert sent_inside_a_retry_after(log) == []
    assert {item.phase for item in store.items.values()} == {Phase.SUCCEEDED}
    truth = world.truth(time.time())
    assert len(truth.submissions) == TENANTS * PER_TENANT
    assert set(truth.submissions.values()) == {1}
    assert truth.duplicates == ()
    assert world.gate.inside_retry_after == 0  # the gateway's own count agrees


async def test_without_the_pause_requests_go_inside_the_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same run with a 429 pausing only the request that got it (the key's other requests
    go on): the simulator's record shows requests inside an announced Retry-After, the failure
    the test above guards against."""

    def refused_without_pause(self: TokenBucket, retry_after: float | None) -> None:
        self.refusals += 1

    monkeypatch.setattr(TokenBucket, "refused", refused_without_pause)
    log, _world, _store = await run_over_http()
    assert sum(1 for row in log if row[4] == 429) > 0
    assert sent_inside_a_retry_after(log) != []
