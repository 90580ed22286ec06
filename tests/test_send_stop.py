"""No copy request leaves after the stop: the client re-checks the stop right before sending,
after its local wait for the rate budget (which the stop also ends at once). And the cheap
parts of a request's path (no wait when nothing is waited for, the date once per second) say
what the slow ones would."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import anyio
import pytest

from orchestrator.clock import RealClock
from orchestrator.core.cloud import SEND_STOP, STOPPED, CloudError, ErrorKind
from orchestrator.core.credentials import Credentials
from orchestrator.ims.calls import Backoff, SignedCalls
from orchestrator.ims.ratelimit import RateLimits
from orchestrator.ims.signer import DATE_FORMAT
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


def _calls(transport: MockTransport) -> SignedCalls:
    clock = RealClock()
    return SignedCalls(
        transport,
        Credentials("AK" * 10, "SK" * 20),
        RateLimits(100.0, clock),
        clock,
        Backoff(0.5, 1.0, random.Random(1)),
    )


@pytest.mark.anyio
async def test_a_post_with_budget_and_connection_free_is_not_sent_once_stopped() -> None:
    """Nothing to wait for (a token and a connection are free: taken without a wait), but the
    stop is set: NOT_SENT/STOPPED, the POST never reaches the transport, its slot is free."""
    transport = MockTransport(accept)
    calls = _calls(transport)
    stop = anyio.Event()
    stop.set()
    token = SEND_STOP.set(stop)
    try:
        with pytest.raises(CloudError) as caught:
            await calls.call("POST", BASE, PATH, body={"name": "x"})
    finally:
        SEND_STOP.reset(token)
    assert (caught.value.kind, caught.value.code) == (ErrorKind.NOT_SENT, STOPPED)
    assert transport.sent == []
    await calls.call("POST", BASE, PATH, body={"name": "x"})  # no stop: the slot was given back
    assert [r.method for r in transport.sent] == ["POST"]


@pytest.mark.anyio
async def test_a_cancelled_task_sends_nothing_even_with_the_budget_free() -> None:
    """A task whose scope is cancelled before its call sends nothing (the budget and the
    connection were free: no wait, yet the cancellation is heard before the wire)."""
    transport = MockTransport(accept)
    calls = _calls(transport)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await calls.call("GET", BASE, "/v2/cloudimages")
    assert scope.cancelled_caught
    assert transport.sent == []


class _SetClock(RealClock):
    def __init__(self) -> None:
        self.moment = 0.0

    def now(self) -> float:
        return self.moment


def test_the_sdk_date_is_the_clocks_second_as_fromtimestamp_rounds_it() -> None:
    """X-Sdk-Date, formatted once per second, reads as the clock's moment would through
    datetime at every moment: edges of a second, rounding into the next, a step back."""
    clock = _SetClock()
    calls = SignedCalls(
        MockTransport(accept),
        Credentials("AK" * 10, "SK" * 20),
        RateLimits(100.0, clock),
        clock,
        Backoff(0.5, 1.0, random.Random(1)),
    )
    base = 1796280950.0
    rng = random.Random(3)
    moments = [base, base + 0.5, base + 0.9999996, base + 0.9999994, base + 1.0000004]
    moments += [base - 0.0000004, base + 0.3, base - 5.2, base + 7.999999]
    moments += [base + rng.uniform(-3, 3) for _ in range(2000)]
    for moment in moments:
        clock.moment = moment
        expected = datetime.fromtimestamp(moment, tz=UTC).strftime(DATE_FORMAT)
        assert calls._sdk_date() == expected, moment
