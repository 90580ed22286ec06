"""ImsClient against a scripted IMS/IAM through the mock transport: paging, signing, retries,
and the classification of every failure (``tests/fake_ims.py`` checks each request the way the
gateway does). The tests where the socket itself matters are in ``test_ims_transport.py``.
Retry sleeps are recorded, never slept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import partial
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.cloud import CloudError, ErrorKind, Job, Quota
from orchestrator.ims.client import _segment
from orchestrator.ims.ratelimit import RateLimits
from orchestrator.ims.transport import Delivery, HttpRequest, HttpResponse, TransportError
from tests.fake_ims import (
    AK,
    COPY,
    COPY_PATH,
    IMAGES,
    JOB_PATH,
    LEGACY_JOB_PATH,
    PROJECT_ID,
    QUOTA,
    QUOTA_OK,
    REGION,
    START,
    Answer,
    FakeCloud,
    Harness,
    answer,
    build_harness,
    gateway_error,
    image,
    ims_error,
)
from tests.mock_transport import MockTransport
from tests.virtual_clock import InstantClock, VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return InstantClock(START)


@pytest.fixture
def cloud(clock: VirtualClock) -> Iterator[FakeCloud]:
    fake = FakeCloud(clock)
    yield fake
    assert fake.problems == [], "requests the gateway would have rejected"


@pytest.fixture
def make(cloud: FakeCloud, clock: VirtualClock) -> Callable[..., Harness]:
    """Clients whose requests go through the mock transport to ``cloud``."""
    return partial(build_harness, cloud, clock, MockTransport(cloud.handle))


# -- reads ---------------------------------------------------------------------------------------


async def test_list_images_follows_markers_over_three_pages(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """Five images at two a page: three signed GETs, each after the last id of the page before."""
    cloud.on(
        "GET",
        IMAGES,
        answer(200, {"images": [image(1), image(2)]}),
        answer(200, {"images": [image(3), image(4)]}),
        answer(200, {"images": [image(5)]}),
    )
    images = await make(page_size=2).client.list_images(REGION, name="web server ü~")
    assert [i.id for i in images] == ["img-1", "img-2", "img-3", "img-4", "img-5"]
    assert images[4].size_bytes == 5 * 2**30
    queries = [s.query for s in cloud.requests("GET", IMAGES)]
    base = "__imagetype=private&limit=2"
    name = "name=web%20server%20%C3%BC~"
    assert queries == [
        f"{base}&{name}",
        f"{base}&marker=img-2&{name}",
        f"{base}&marker=img-4&{name}",
    ]


async def test_list_images_accepts_page_info_next_marker(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A server-given next_marker is followed even after a short page; an empty page ends."""
    cloud.on(
        "GET",
        IMAGES,
        answer(200, {"images": [image(1)], "page_info": {"next_marker": "cursor-9"}}),
        answer(200, {"images": []}),
    )
    images = await make().client.list_images(REGION, image_id="img-1", private_only=False)
    assert [i.id for i in images] == ["img-1"]
    assert [s.query for s in cloud.requests("GET", IMAGES)] == [
        "id=img-1&limit=500",
        "id=img-1&limit=500&marker=cursor-9",
    ]


async def test_list_images_sends_the_documented_filters_on_every_page(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """Discovery's filters are query keys of every page, beside limit and marker."""
    cloud.on(
        "GET",
        IMAGES,
        answer(200, {"images": [image(1), image(2)]}),
        answer(200, {"images": []}),
    )
    filters = {"created_at": "gte:2026-03-01T00:00:00Z", "tag": "env.prod"}
    await make(page_size=2).client.list_images(REGION, filters=filters)
    queries = [s.query for s in cloud.requests("GET", IMAGES)]
    base = "__imagetype=private&created_at=gte%3A2026-03-01T00%3A00%3A00Z&limit=2"
    assert queries == [f"{base}&tag=env.prod", f"{base}&marker=img-2&tag=env.prod"]


async def test_get_quota(cloud: FakeCloud, make: Callable[..., Harness]) -> None:
    """The image quota is read from quotas.resources."""
    cloud.on("GET", QUOTA, QUOTA_OK)
    assert await make().client.get_quota(REGION) == Quota(used=3, quota=20)


async def test_get_retries_a_5xx_then_succeeds(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A 503 on a read is retried after a recorded, capped, jittered sleep."""
    cloud.on("GET", QUOTA, answer(503, {}), answer(502, {}), QUOTA_OK)
    harness = make()
    assert await harness.client.get_quota(REGION) == Quota(used=3, quota=20)
    assert len(cloud.requests("GET", QUOTA)) == 3
    assert len(harness.sleeps) == 2
    assert all(0 <= s <= harness.config.timing.backoff_max for s in harness.sleeps)


async def test_get_gives_up_after_the_attempt_budget(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A read failing every time ends in the last TRANSIENT error, after max_attempts tries."""
    cloud.on("GET", QUOTA, answer(500, {"error": {"code": "IMG.0500", "message": "busy"}}))
    harness = make(max_attempts=4)
    with pytest.raises(CloudError) as caught:
        await harness.client.get_quota(REGION)
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert caught.value.status == 500
    assert len(cloud.requests("GET", QUOTA)) == 4
    assert len(harness.sleeps) == 3


def _throttled_once(cloud: FakeCloud, retry_after: str) -> None:
    """The quota read answers 429 (APIGW.0308) with this ``Retry-After`` once, then its quota."""
    throttled = gateway_error(
        429, "APIGW.0308", "The throttling threshold has been reached", {"Retry-After": retry_after}
    )

    async def throttle(_request: HttpRequest) -> HttpResponse:
        return throttled

    cloud.on("GET", QUOTA, throttle, QUOTA_OK)


@pytest.mark.parametrize(
    "retry_after",
    ["7", format_datetime(datetime.fromtimestamp(START + 7, tz=UTC), usegmt=True)],
    ids=["seconds", "http-date"],
)
async def test_429_waits_at_least_retry_after(
    cloud: FakeCloud, make: Callable[..., Harness], retry_after: str
) -> None:
    """A throttled read waits as long as Retry-After says, even beyond backoff_max (2 s)."""
    _throttled_once(cloud, retry_after)
    harness = make()
    assert await harness.client.get_quota(REGION) == Quota(used=3, quota=20)
    assert len(harness.sleeps) == 1
    assert harness.sleeps[0] >= 7


@pytest.mark.parametrize("retry_after", ["inf", "1e999", "nan"])
async def test_a_retry_after_that_is_no_finite_number_waits_the_default_pause(
    cloud: FakeCloud, make: Callable[..., Harness], retry_after: str
) -> None:
    """A Retry-After of ``inf`` would pause the key for ever, ``nan`` not at all: read as
    absent (the default pause), the throttled read waits a while, then succeeds."""
    _throttled_once(cloud, retry_after)
    harness = make()
    assert await harness.client.get_quota(REGION) == Quota(used=3, quota=20)
    assert len(harness.sleeps) == 1
    assert 0 < harness.sleeps[0] < 3600


async def test_a_quota_beyond_a_float_is_no_quota(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """``"used": 1e999`` reads as inf: the answer has no usable image quota (a clear error,
    not an OverflowError out of the client)."""
    body = {"quotas": {"resources": [{"type": "image", "used": 1e999, "quota": 20}]}}
    cloud.on("GET", QUOTA, answer(200, body))
    with pytest.raises(CloudError) as caught:
        await make().client.get_quota(REGION)
    assert caught.value.kind is ErrorKind.PERMANENT


# -- the copy POST -------------------------------------------------------------------------------


async def test_copy_sends_the_signed_body_and_returns_the_job_id(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """The POST carries exactly the JSON bytes signed, the project and the STS token."""
    cloud.on("POST", COPY_PATH, answer(200, {"job_id": "job-1"}))
    harness = make(security_token="STS-TOKEN")
    assert await harness.client.copy_image(REGION, "src-1", COPY) == "job-1"
    [post] = cloud.requests("POST", COPY_PATH)
    assert post.body == json.dumps(COPY.body()).encode()
    assert post.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert post.headers["X-Project-Id"] == PROJECT_ID
    assert post.headers["X-Security-Token"] == "STS-TOKEN"
    assert post.headers["X-Sdk-Date"] == "20240101T000000Z"


async def test_copy_answer_without_job_id_is_unknown(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A 200 without a job id leaves the outcome unknown: the copy may have started."""
    cloud.on("POST", COPY_PATH, answer(200, {"status": "ok"}))
    with pytest.raises(CloudError) as caught:
        await make().client.copy_image(REGION, "src-1", COPY)
    assert caught.value.kind is ErrorKind.UNKNOWN


async def test_copy_5xx_is_unknown_and_never_resent(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A 500 on the POST raises UNKNOWN at once; the server saw exactly one POST."""
    cloud.on("POST", COPY_PATH, answer(500, {}), answer(200, {"job_id": "job-2"}))
    harness = make()
    with pytest.raises(CloudError) as caught:
        await harness.client.copy_image(REGION, "src-1", COPY)
    assert caught.value.kind is ErrorKind.UNKNOWN
    assert len(cloud.requests("POST", COPY_PATH)) == 1
    assert harness.sleeps == []


async def test_copy_throttled_by_the_gateway_is_retried(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A 429 / APIGW.0308 on the POST was refused before IMS saw it: retried after Retry-After."""
    throttled = gateway_error(
        429, "APIGW.0308", "The throttling threshold has been reached", {"Retry-After": "3"}
    )

    async def throttle(_request: HttpRequest) -> HttpResponse:
        return throttled

    cloud.on("POST", COPY_PATH, throttle, answer(200, {"job_id": "job-1"}))
    harness = make()
    assert await harness.client.copy_image(REGION, "src-1", COPY) == "job-1"
    assert len(cloud.requests("POST", COPY_PATH)) == 2
    assert harness.sleeps[0] >= 3


async def test_copy_back_pressure_is_not_retried_here(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """IMG.0060 is BACK_PRESSURE for the engine to handle; the client does not retry it."""
    cloud.on("POST", COPY_PATH, ims_error(400, "IMG.0060", "too many tasks"))
    harness = make()
    with pytest.raises(CloudError) as caught:
        await harness.client.copy_image(REGION, "src-1", COPY)
    assert caught.value.kind is ErrorKind.BACK_PRESSURE
    assert len(cloud.requests("POST", COPY_PATH)) == 1


# -- jobs ----------------------------------------------------------------------------------------

JOB = {
    "job_id": "job-1",
    "job_type": "imsCrossRegionCopyImageJob",
    "status": "RUNNING",
    "entities": {"process_percent": 0.5, "image_id": ""},
}


async def test_get_job(cloud: FakeCloud, make: Callable[..., Harness]) -> None:
    """The recommended job API answers the job."""
    cloud.on("GET", JOB_PATH, answer(200, JOB))
    job = await make().client.get_job(REGION, "job-1")
    assert job == Job(job_id="job-1", status="RUNNING", progress=0.5)


async def test_job_query_falls_back_to_the_legacy_api_once(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """Where the gateway lacks /v1/cloudimages/job (APIGW.0101), the legacy API is used, and
    remembered."""
    cloud.on("GET", LEGACY_JOB_PATH, answer(200, {**JOB, "status": "SUCCESS"}))
    client = make().client
    first = await client.get_job(REGION, "job-1")
    second = await client.get_job(REGION, "job-1")
    assert first.status == second.status == "SUCCESS"
    assert len(cloud.requests("GET", JOB_PATH)) == 1
    assert len(cloud.requests("GET", LEGACY_JOB_PATH)) == 2


async def test_unknown_job_is_not_found_without_fallback(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A 404 from IMS itself (not the gateway's missing-API code) is NOT_FOUND."""
    cloud.on("GET", JOB_PATH, ims_error(404, "IMG.0404", "job not found"))
    harness = make()
    with pytest.raises(CloudError) as caught:
        await harness.client.get_job(REGION, "job-1")
    assert caught.value.kind is ErrorKind.NOT_FOUND
    assert cloud.requests("GET", LEGACY_JOB_PATH) == []
    assert harness.sleeps == []


# -- authentication ------------------------------------------------------------------------------


async def test_bad_signature_is_auth_and_never_retried(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A wrong secret key fails the gateway's check: AUTH after exactly one request."""
    harness = make(secret_key="WRONG-SECRET-KEY-VALUE")
    with pytest.raises(CloudError) as caught:
        await harness.client.list_images(REGION)
    assert caught.value.kind is ErrorKind.AUTH
    assert caught.value.code == "APIGW.0301"
    assert "secret key" in caught.value.message  # advice on what to fix
    assert "WRONG-SECRET-KEY-VALUE" not in str(caught.value)
    assert len(cloud.seen) == 1
    assert harness.sleeps == []
    assert cloud.problems == [f"GET {IMAGES}: signature mismatch"]
    cloud.problems.clear()  # the fixture would flag it: here it is the point


async def test_401_on_the_copy_is_auth_and_never_retried(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """An expired token (APIGW.0307) on the POST: AUTH, one request, says to refresh the token."""
    token_expired = answer(401, {"error_code": "APIGW.0307", "error_msg": "The token expires."})
    cloud.on("POST", COPY_PATH, token_expired)
    harness = make()
    with pytest.raises(CloudError) as caught:
        await harness.client.copy_image(REGION, "src-1", COPY)
    assert caught.value.kind is ErrorKind.AUTH
    assert "expired" in caught.value.message
    assert len(cloud.requests("POST", COPY_PATH)) == 1
    assert harness.sleeps == []


# -- rate limit and session ----------------------------------------------------------------------


async def test_every_request_takes_a_token_from_the_keys_bucket(
    cloud: FakeCloud, make: Callable[..., Harness], clock: VirtualClock
) -> None:
    """Three requests through a 1/s bucket with burst 1 take two seconds of (virtual) time."""
    cloud.on("GET", QUOTA, QUOTA_OK)
    limits = RateLimits(1.0, clock, burst=1)
    client = make(limits=limits).client
    for _ in range(3):
        await client.get_quota(REGION)
    assert clock.now() - START == pytest.approx(2.0)
    assert limits.for_key(AK, f"127.0.0.1:{cloud.port}").tokens < 1


# -- the transport's failures, classified ---------------------------------------------------------


def failing(delivery: Delivery) -> Answer:
    async def respond(_request: HttpRequest) -> HttpResponse:
        raise TransportError(delivery, "scripted failure")

    return respond


@pytest.mark.parametrize(
    ("delivery", "kind", "posts"),
    [
        (Delivery.NOT_SENT, ErrorKind.NOT_SENT, 3),
        (Delivery.MAYBE_SENT, ErrorKind.UNKNOWN, 1),
        (Delivery.INVALID, ErrorKind.PERMANENT, 1),
    ],
    ids=["not-sent", "maybe-sent", "invalid"],
)
async def test_a_post_is_sent_again_only_if_it_never_left(
    cloud: FakeCloud, make: Callable[..., Harness], delivery: Delivery, kind: ErrorKind, posts: int
) -> None:
    """The transport says how far the POST got: only a POST never sent is sent again."""
    cloud.on("POST", COPY_PATH, failing(delivery))
    harness = make(max_attempts=3)
    with pytest.raises(CloudError) as caught:
        await harness.client.copy_image(REGION, "src-1", COPY)
    assert caught.value.kind is kind
    assert "scripted failure" in str(caught.value)
    assert len(cloud.requests("POST", COPY_PATH)) == posts


async def test_a_read_that_may_have_been_sent_is_retried(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A GET whose answer was lost is TRANSIENT: sent again, and the second answer counts."""
    cloud.on("GET", QUOTA, failing(Delivery.MAYBE_SENT), QUOTA_OK)
    harness = make()
    assert await harness.client.get_quota(REGION) == Quota(used=3, quota=20)
    assert len(cloud.requests("GET", QUOTA)) == 2
    assert len(harness.sleeps) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=8) | st.sampled_from(["ff8080828d1f", "a-b_c.d~e", "é1", "²", "٣"]))
def test_a_path_segment_is_quoted_as_quote_quotes_it(value: str) -> None:
    """A plain id is its own encoding; anything else (a non-ASCII letter or digit too) is what
    ``quote(value, safe="")`` makes of it."""
    assert _segment(value) == quote(value, safe="")
