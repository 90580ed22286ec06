"""No copy request leaves after the stop, even one already past the client's own last check
when the signal comes: the signal's handler trips the "no more copy requests" flag at once (not
a loop turn or two later, when the run hears it), and the transport reads the flag once more
right before the request's first byte goes out (after it waited for a connection).

The real client (signing, budgets, the wire transport) against the simulator's HTTP front on
127.0.0.1 in this process; the signal is a real SIGTERM to this process, sent as the copy
request enters the transport (after the client's last check, before the wire). Judged on the
simulator's record of the requests it received, and on the checkpoint.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio
import pytest

from orchestrator.clock import Clock, RealClock
from orchestrator.commands.clouds import CloudFactory
from orchestrator.commands.common import TenantCredentials
from orchestrator.commands.run import execute_run
from orchestrator.config import Config
from orchestrator.core.cloud import SEND_STOP, STOPPED, CloudError, ErrorKind, TenantCloud
from orchestrator.core.credentials import Credentials
from orchestrator.core.model import Item, Phase
from orchestrator.engine.context import SubmitStop
from orchestrator.ims.calls import Backoff, SignedCalls
from orchestrator.ims.client import ImsClient
from orchestrator.ims.ratelimit import RateLimits
from orchestrator.ims.transport import Delivery, HttpRequest, HttpResponse, TransportError
from orchestrator.ims.wire import WireTransport
from orchestrator.simulator.app import build_app, serve
from orchestrator.simulator.world import World
from orchestrator.state.checkpoint import read_snapshot
from orchestrator.state.codec import item_from_dict
from tests.inprocess import LocalCloud

pytestmark = pytest.mark.timeout(60)

COPY = "cross_region_copy"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


def copies_received(world: World) -> list[object]:
    return [r for r in world.request_log if r.kind == "copy"]


class SignalOnFirstCopy(WireTransport):
    """A SIGTERM to this process as the first copy POST enters the transport."""

    def __init__(self, timeout: float, signals: list[float]) -> None:
        super().__init__(timeout)
        self.signals = signals

    async def send(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and COPY in request.url and not self.signals:
            self.signals.append(anyio.current_time())
            os.kill(os.getpid(), signal.SIGTERM)
        return await super().send(request)


def clouds_signalling(signals: list[float]) -> CloudFactory:
    @asynccontextmanager
    async def open_clouds(
        config: Config, credentials: TenantCredentials, clock: Clock
    ) -> AsyncIterator[Mapping[str, TenantCloud]]:
        limits = RateLimits(config.requests_per_second, clock)
        transport = SignalOnFirstCopy(config.timing.request_timeout, signals)
        try:
            yield {
                name: ImsClient(transport, tenant, creds, config, limits, clock)
                for name, (tenant, creds) in credentials.items()
            }
        finally:
            transport.close()

    return open_clouds


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """Both loops a run may use (orchestrator/eventloop.py): the proof must hold on each."""
    return ("asyncio", {"use_uvloop": request.param == "uvloop"})


@pytest.mark.anyio
async def test_a_signal_after_the_last_check_keeps_the_copy_request_off_the_wire(
    local_cloud: LocalCloud, caught: list[int]
) -> None:
    """SIGTERM while the run's first copy POST is inside aiohttp (past the client's check):
    the simulator receives no copy request, the run exits 75, and the item is pending with
    a new attempt (provably not sent: nothing to reconcile)."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=1)
    cloud.start()
    world = cloud.world
    assert world is not None
    runner, port = await serve(build_app(world))
    try:
        cloud.port = port
        cloud.write_config()
        request = cloud.run_request()
        signals: list[float] = []
        with anyio.fail_after(30):
            summary = await execute_run(
                request, clouds=clouds_signalling(signals), clock=RealClock()
            )
    finally:
        await runner.cleanup()
    assert signals, "the run made no copy request"
    assert caught == []  # the run heard the signal, not the fallback
    assert copies_received(world) == []
    assert summary.exit_code == 75, summary.reason
    assert "signal SIGTERM" in summary.reason
    snap = read_snapshot(cloud.state_dir, item_from_dict)
    assert snap is not None
    items: dict[str, Item] = snap["items"]
    [item] = items.values()
    assert (item.phase, item.detail, item.attempt) == (Phase.PENDING, "stopped before sending", 2)


class StopOnEntry(WireTransport):
    """The stop comes as the request enters the transport (after every check of the client)."""

    def __init__(self, timeout: float, stop: SubmitStop) -> None:
        super().__init__(timeout)
        self.stop = stop

    async def send(self, request: HttpRequest) -> HttpResponse:
        self.stop.set()
        return await super().send(request)


@pytest.mark.anyio
async def test_the_transport_reads_the_stop_right_before_the_first_byte(
    local_cloud: LocalCloud,
) -> None:
    """The stop is set after the request was handed to the transport: the copy POST is not
    sent (NOT_SENT, STOPPED), the simulator receives nothing, and a later request goes through."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=1)
    cloud.start()
    world = cloud.world
    assert world is not None
    account = cloud.accounts[0]
    image = cloud.rows[0]["image_id"]
    runner, port = await serve(build_app(world))
    stop = SubmitStop()
    clock = RealClock()
    try:
        transport = StopOnEntry(5.0, stop)
        try:
            calls = SignedCalls(
                transport,
                Credentials(account["access_key"], account["secret_key"]),
                RateLimits(100.0, clock),
                clock,
                Backoff(0.5, 1.0, random.Random(1)),
            )
            base = f"http://127.0.0.1:{port}/ims/cn-north-4"
            path = f"/v1/cloudimages/{image}/{COPY}"
            body = {
                "name": "copy",
                "region": "cn-east-3",
                "project_name": "cn-east-3",
                "agency_name": "ims_admin_agency",
            }
            project = world.account(account["name"]).project("cn-north-4")
            assert project is not None
            token = SEND_STOP.set(stop)
            try:
                with pytest.raises(CloudError) as refused:
                    await calls.call("POST", base, path, body=body, project_id=project.id)
            finally:
                SEND_STOP.reset(token)
            assert (refused.value.kind, refused.value.code) == (ErrorKind.NOT_SENT, STOPPED)
            assert copies_received(world) == []
            # Not under a stop: the same POST goes out (and the simulator reads it).
            await calls.call("POST", base, path, body=body, project_id=project.id)
        finally:
            transport.close()
    finally:
        await runner.cleanup()
    assert len(copies_received(world)) == 1


@pytest.mark.anyio
async def test_a_withheld_request_leaves_nothing_and_an_unwithheld_one_is_the_same_bytes() -> None:
    """Against a raw TCP server: a request withheld by its last check writes no byte (the
    server sees its connection close empty); one that passes the check writes exactly the
    bytes of the same request with no check."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            if sep and len(rest) >= length:
                writer.write(ANSWER)
                await writer.drain()
                break
        received.append(data)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/cloudimages/x/{COPY}"
    headers = {"Content-Type": "application/json;charset=UTF-8", "X-Sdk-Date": "20260101T000000Z"}
    checks: list[int] = []

    def withhold_on_first_read() -> bool:  # the stop came while the request waited
        checks.append(1)
        return len(checks) == 1

    try:
        transport = WireTransport(5.0)
        try:
            with pytest.raises(TransportError) as withheld:
                await transport.send(
                    HttpRequest("POST", url, headers, b'{"a": 1}', withhold_on_first_read)
                )
            assert withheld.value.delivery is Delivery.WITHHELD
            await transport.send(HttpRequest("POST", url, headers, b'{"a": 1}'))
            await transport.send(HttpRequest("POST", url, headers, b'{"a": 1}', lambda: False))
        finally:
            transport.close()
    finally:
        server.close()
        await server.wait_closed()
    assert len(checks) == 1
    sent = [data for data in received if data]
    assert len(sent) == 2, received
    assert sent[0] == sent[1]
