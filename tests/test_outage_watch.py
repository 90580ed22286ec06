"""The outage watch as each watched call tells it (``engine/outage.py``): a success shows its
endpoint alive and clears its failing, an unreached call (no answer, a 5xx) counts toward the
outage, a throttling refusal says nothing either way, and a refusal shows the endpoint alive."""

from __future__ import annotations

import contextlib
from typing import Any, cast

import pytest

from orchestrator.config import Config, Endpoints, TenantConfig
from orchestrator.core.cloud import CloudError, ErrorKind, TenantCloud
from orchestrator.engine.outage import OutageWatch, watched

pytestmark = pytest.mark.anyio

OUTAGE = 60.0
IMS = "http://ims.example/{region}"
ENDPOINT = "http://ims.example/r1"


class _Scripted:
    """A cloud whose get_job ends as the next of ``script`` says (an error, or a success)."""

    def __init__(self, script: list[CloudError | None]) -> None:
        self.script = script

    async def get_job(self, region: str, job_id: str, **_: Any) -> str:
        outcome = self.script.pop(0)
        if outcome is not None:
            raise outcome
        return job_id


def _watched(script: list[CloudError | None]) -> tuple[TenantCloud, OutageWatch, list[float]]:
    config = Config(
        tenants={"t0": TenantConfig(name="t0")},
        endpoints=Endpoints(ims=IMS, iam="http://iam.example"),
    )
    clock = [0.0]
    watch = OutageWatch(OUTAGE, 0.0)
    clouds = {"t0": cast(TenantCloud, _Scripted(script))}  # only get_job is asked for
    cloud = watched(clouds, config, watch, lambda: clock[0])["t0"]
    return cloud, watch, clock


async def _ask(cloud: TenantCloud, clock: list[float], at: float) -> None:
    clock[0] = at
    with contextlib.suppress(CloudError):
        await cloud.get_job("r1", "j")


REFUSED = CloudError(ErrorKind.NOT_SENT, "connection refused")
THROTTLED = CloudError(ErrorKind.TRANSIENT, "too many", status=429)
UNAVAILABLE = CloudError(ErrorKind.TRANSIENT, "bad gateway", status=502)
NOT_FOUND = CloudError(ErrorKind.NOT_FOUND, "no such job", status=404)


async def test_failing_calls_with_no_success_for_the_outage_time_make_the_endpoint_down() -> None:
    cloud, watch, clock = _watched([None, REFUSED, UNAVAILABLE])
    for at in (10.0, 20.0, 65.0):
        await _ask(cloud, clock, at)
    assert watch.check(69.0) == []  # 59 s since the last success at 10
    (down,) = watch.check(70.0)
    assert (down.endpoint, down.seconds) == (ENDPOINT, 60.0)
    assert down.last_error == "HTTP 502 bad gateway"
    assert watch.check(80.0) == []  # each endpoint found once


async def test_a_success_after_failures_clears_them() -> None:
    cloud, watch, clock = _watched([REFUSED, None])
    await _ask(cloud, clock, 10.0)
    await _ask(cloud, clock, 20.0)
    assert watch.check(1000.0) == []


async def test_a_refusal_shows_the_endpoint_alive_and_a_429_says_nothing() -> None:
    cloud, watch, clock = _watched([REFUSED, NOT_FOUND, REFUSED, THROTTLED])
    for at in (10.0, 20.0, 30.0, 50.0):
        await _ask(cloud, clock, at)
    assert watch.check(79.0) == []  # the refusal at 20 answered
    (down,) = watch.check(80.0)  # the 429 at 50 neither cleared the failing nor answered
    assert (down.seconds, down.last_error) == (60.0, "connection refused")
