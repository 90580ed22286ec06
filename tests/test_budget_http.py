"""The request budget over HTTP: the engine and the real client (signing, budgets, aiohttp's
pool) against the simulator's HTTP front on 127.0.0.1, whose gateway throttles each access key
(429 ``APIGW.0308`` with a ``Retry-After``, as the API gateway does).

Judged twice: on the wire as the client used it (the moment each request was handed to the
connection and each 429 came back: nothing of a key may be handed over inside a Retry-After it
has received), and on the simulator's own record of the requests it received (``GET
/_sim/requests``). Client and simulator share one event loop here, so on a loaded machine a
request written before the 429 came back can be read by the simulator well after it: the
simulator's judgement allows for the loop's measured lag, the client's needs no allowance."""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import aiohttp
import anyio
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
from orchestrator.ims.transport import HttpRequest, HttpResponse, Transport
from orchestrator.ims.wire import open_transport
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


def sent_inside_a_retry_after(
    log: Sequence[Sequence[object]], grace: float = IN_FLIGHT_GRACE
) -> list[tuple[str, float]]:
    """Requests of a key that reached the host inside a Retry-After already announced to that
    key (one host here: every region and IAM are served on 127.0.0.1:port). The gateway counts
    whole seconds, so a 429 at ``t`` announces a pause until the next whole second; a request
    already on the wire when the 429 left (``grace``) does not count."""
    by_key: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for at, _method, _kind, account, status, *_ in log:
        if account is not None:
            by_key[str(account)].append((float(str(at)), int(str(status))))
    inside = []
    for account, requests in by_key.items():
        requests.sort()
        pauses = [(at, math.floor(at) + 1.0) for at, status in requests if status == 429]
        for at, _status in requests:
            if any(begun + grace <= at < until for begun, until in pauses):
                inside.append((account, at))
    return inside


def access_key(request: HttpRequest) -> str:
    auth = next(v for k, v in request.headers.items() if k.lower() == "authorization")
    return auth.partition("Access=")[2].partition(",")[0]


@dataclass
class WireRecord:
    """What the client handed to the wire and got back, on its own monotonic clock."""

    sent: list[tuple[str, float]] = field(default_factory=list)  # key, when handed over
    paused: list[tuple[str, float, float]] = field(default_factory=list)  # key, from, until

    def inside(self) -> list[tuple[str, float]]:
        """Requests handed over inside a Retry-After their key had already received."""
        return [
            (key, at)
            for key, at in self.sent
            if any(k == key and begun <= at < until for k, begun, until in self.paused)
        ]


class RecordingTransport:
    def __init__(self, inner: Transport, record: WireRecord) -> None:
        self._inner = inner
        self._record = record

    async def send(self, request: HttpRequest) -> HttpResponse:
        key = access_key(request)
        self._record.sent.append((key, time.monotonic()))
        response = await self._inner.send(request)
        retry_after = response.header("Retry-After")
        if response.status == 429 and retry_after is not None:
            now = time.monotonic()
            self._record.paused.append((key, now, now + float(retry_after)))
        return response


class LoopLag:
    """The event loop's worst lag while the run goes: how late a 10 ms sleep wakes up."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def watch(self) -> None:
        while True:
            before = time.monotonic()
            await anyio.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - before - 0.01)


async def run_over_http() -> tuple[list[list[object]], World, InMemoryStore, WireRecord, float]:
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
    record = WireRecord()
    lag = LoopLag()
    try:
        async with open_transport(config) as opened, anyio.create_task_group() as watcher:
            watcher.start_soon(lag.watch)
            transport = RecordingTransport(opened, record)
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
            watcher.cancel_scope.cancel()
        async with (
            aiohttp.ClientSession() as session,
            session.get(base + "/_sim/requests") as response,
        ):
            log = (await response.json())["requests"]
    finally:
        await runner.cleanup()
    return log, world, store, record, lag.worst


async def test_the_budget_holds_under_the_gateways_throttling_over_http() -> None:
    """A gateway allowing 4 requests/s per key, a client configured for 20: 429s come, yet no
    request of a key reaches the host inside a Retry-After announced to that key, and every
    item is copied exactly once."""
    log, world, store, wire, lag = await run_over_http()
    assert sum(1 for row in log if row[4] == 429) > 0
    assert wire.inside() == []
    assert sent_inside_a_retry_after(log, grace=IN_FLIGHT_GRACE + lag) == []
    assert {item.phase for item in store.items.values()} == {Phase.SUCCEEDED}
    truth = world.truth(time.time())
    assert len(truth.submissions) == TENANTS * PER_TENANT
    assert set(truth.submissions.values()) == {1}
    assert truth.duplicates == ()
    if lag < IN_FLIGHT_GRACE:  # the gateway's own count (its fixed grace) agrees
        assert world.gate.inside_retry_after == 0


async def test_without_the_pause_requests_go_inside_the_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same run with a 429 pausing only the request that got it (the key's other requests
    go on): the simulator's record shows requests inside an announced Retry-After, the failure
    the test above guards against."""

    def refused_without_pause(self: TokenBucket, retry_after: float | None) -> None:
        self.refusals += 1

    monkeypatch.setattr(TokenBucket, "refused", refused_without_pause)
    log, _world, _store, wire, _lag = await run_over_http()
    assert sum(1 for row in log if row[4] == 429) > 0
    assert wire.inside() != []
    assert sent_inside_a_retry_after(log) != []
