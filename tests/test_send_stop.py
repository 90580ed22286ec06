"""No copy request leaves after the stop: the client re-checks the stop right before sending,
after its local wait for the rate budget (which the stop also ends at once)."""

from __future__ import annotations

import random

import anyio
import pytest

from orchestrator.clock import RealClock
from orchestrator.core.cloud import SEND_STOP, STOPPED, CloudError, ErrorKind
from orchestrator.core.credentials import Credentials
from orchestrator.ims.calls import Backoff, SignedCalls
from orchestrator.ims.ratelimit import RateLimits
from orchestrator.ims.transport import HttpRequest, HttpResponse
from tests.mock_transport import MockTransport, json_response

BASE = "https://ims.cn-north-4.example.com"
PATH = "/v1/cloudimages/img/cross_region_copy"


async def accept(_request: HttpRequest) -> HttpResponse:
    return json_response(200, {"job_id": "job-1"})


@pytest.mark.anyio
async def test_a_post_waiting_for_the_rate_budget_is_not_sent_after_the_stop() -> None:
    """The budget is spent (1 request per 100 s): a stop during the wait ends it at once,
    with NOT_SENT/STOPPED, and the POST never reaches the transport."""
    clock = RealClock()
    transport = MockTransport(accept)
    calls = SignedCalls(
        transport,
        Credentials("AK" * 10, "SK" * 20),
        RateLimits(0.01, clock, burst=1),
        clock,
        Backoff(0.5, 1.0, random.Random(1)),
    )
    await calls.call("GET", BASE, "/v2/cloudimages")  # the one token of the bucket
    stop = anyio.Event()
    token = SEND_STOP.set(stop)
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(_stop_soon, stop)
                with pytest.raises(CloudError) as caught:
                    await calls.call("POST", BASE, PATH, body={"name": "x"})
    finally:
        SEND_STOP.reset(token)
    assert caught.value.kind is ErrorKind.NOT_SENT
    assert caught.value.code == STOPPED
    assert [r.method for r in transport.sent] == ["GET"]


async def _stop_soon(stop: anyio.Event) -> None:
    await anyio.sleep(0.2)
    stop.set()
