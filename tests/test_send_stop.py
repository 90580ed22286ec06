"""No copy request leaves after the stop: the client re-checks the stop right before sending,
after its local wait for the rate budget (which the stop also ends at once). And the cheap
parts of a request's path (no wait when nothing is waited for, the date once per second) say
what the slow ones would."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import anyio.lowlevel
import pytest

from orchestrator.clock import RealClock
from orchestrator.core.cloud import SEND_STOP, STOPPED, CloudError, ErrorKind
from orchestrator.core.credentials import Credentials
from orchestrator.engine.context import SubmitStop
from orchestrator.ims.calls import Backoff, SignedCalls
from orchestrator.ims.ratelimit import RateLimits
from orchestrator.ims.signer import DATE_FORMAT
from orchestrator.ims.transport import HttpRequest, HttpResponse
from tests.mock_transport import MockTransport, json_response

HOST = "ims.cn-north-4.example.com"
BASE = f"https://{HOST}"
PATH = "/v1/cloudimages/img/cross_region_copy"


async def accept(_request: HttpRequest) -> HttpResponse:
    return json_response(200, {"job_id": "job-1"})


FLAGS: dict[str, Callable[[], SubmitStop]] = {
    "the run's SubmitStop": SubmitStop,
}


@pytest.mark.anyio
@pytest.mark.parametrize("flag", FLAGS)
async def test_a_post_waiting_for_the_rate_budget_is_not_sent_after_the_stop(flag: str) -> None:
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
    stop = FLAGS[flag]()
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


async def _stop_soon(stop: SubmitStop, tasks: list[int] | None = None) -> None:
    await anyio.sleep(0.2)
    if tasks is not None:
        tasks.append(len(anyio.get_running_tasks()))
    stop.set()


@pytest.mark.anyio
@pytest.mark.parametrize("flag", FLAGS)
async def test_a_post_waiting_for_a_connection_is_not_sent_after_the_stop(flag: str) -> None:
    """Every connection to the host is taken: a stop while the POST waits for one ends the
    wait at once, NOT_SENT/STOPPED, nothing sent, no connection slot kept. The run's
    SubmitStop does it with no watcher task beside the wait."""
    clock = RealClock()
    transport = MockTransport(accept)
    limits = RateLimits(100.0, clock, in_flight=1)
    calls = SignedCalls(
        transport,
        Credentials("AK" * 10, "SK" * 20),
        limits,
        clock,
        Backoff(0.5, 1.0, random.Random(1)),
    )
    slots = limits.slots(HOST)
    slots.acquire_nowait()  # the one connection, busy
    stop = FLAGS[flag]()
    tasks: list[int] = []
    token = SEND_STOP.set(stop)
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(_stop_soon, stop, tasks)
                before = len(anyio.get_running_tasks())
                with pytest.raises(CloudError) as caught:
                    await calls.call("POST", BASE, PATH, body={"name": "x"})
    finally:
        SEND_STOP.reset(token)
    assert (caught.value.kind, caught.value.code) == (ErrorKind.NOT_SENT, STOPPED)
    assert transport.sent == []
    assert slots.value == 0  # still only the one taken above
    watchers = tasks[0] - before
    assert watchers == (0 if flag == "the run's SubmitStop" else 1)


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
    stop = SubmitStop()
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


@pytest.mark.anyio
async def test_the_stop_event_takes_back_waits_before_and_after_it_is_set() -> None:
    """A wait under the run's SubmitStop: over as usual while it is not set (and forgotten
    then: nothing kept per wait), cancelled when it is set, and at once once it is."""
    stop = SubmitStop()
    for _ in range(3):
        with stop.withdrawing() as scope:
            await anyio.lowlevel.checkpoint()
        assert not scope.cancel_called
    assert not stop._scopes
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_soon, stop)
        with stop.withdrawing() as scope:
            await anyio.sleep(30)
    assert scope.cancelled_caught
    with anyio.fail_after(1), stop.withdrawing() as scope:
        await anyio.sleep(30)
    assert scope.cancelled_caught
    assert stop.is_set()
