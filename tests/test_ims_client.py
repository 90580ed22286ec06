"""ImsClient against a scripted IMS/IAM: paging, signing, retries, and error translation.

The scripted answers come through the mock transport (``tests/mock_transport.py``): no socket.
The few tests where the socket itself matters (timeouts, resets, a refused connection) send
through the real aiohttp transport to the same script served on 127.0.0.1. Either way every
request is checked the way the gateway checks it (signature recomputed from what was sent,
canonical wire query, X-Project-Id on IMS calls and not on IAM calls); a mismatch fails the
test at teardown. Retry sleeps are recorded, never slept.
"""

from __future__ import annotations

import json
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from orchestrator.config import Config, Endpoints, TenantConfig, Timing
from orchestrator.core.cloud import CloudError, CopyRequest, ErrorKind, Job, Quota
from orchestrator.core.credentials import Credentials
from orchestrator.ims.client import ImsClient
from orchestrator.ims.ratelimit import RateLimits
from orchestrator.ims.signer import (
    DATE_FORMAT,
    canonical_query,
    compute_signature,
    parse_authorization,
)
from orchestrator.ims.transport import (
    AiohttpTransport,
    Delivery,
    HttpRequest,
    HttpResponse,
    TransportError,
    env_proxy,
    open_session,
)
from tests.mock_transport import MockTransport, json_response
from tests.virtual_clock import InstantClock, VirtualClock

AK = "AKTEST00000000000000"
SK = "SKTEST0000000000000000000000000000000000"
REGION = "cn-north-4"
PROJECT_ID = "0123456789abcdef0123456789abcdef"
DOMAIN_ID = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0"
START = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
TIMEOUT = 0.25
COPY = CopyRequest(
    name="copy-img",
    description="",
    region="cn-east-3",
    project_name="cn-east-3",
    agency_name="ims_admin_agency",
)

Answer = Callable[[HttpRequest], Awaitable[HttpResponse]]


class Hang(Exception):
    """Served only: keep the connection open without answering."""


class Drop(Exception):
    """Served only: close (FIN) or reset (RST) the connection without answering."""

    def __init__(self, *, rst: bool) -> None:
        super().__init__()
        self.rst = rst


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class FakeCloud:
    """IMS and IAM on one host: ``/ims/{region}/...`` and ``/iam/...``; answers are scripted."""

    clock: VirtualClock
    port: int = 0
    scripts: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    project_ids: dict[str, str] = field(default_factory=lambda: {REGION: PROJECT_ID})
    release: anyio.Event = field(default_factory=anyio.Event)

    def on(self, method: str, path: str, *answers: Answer) -> None:
        """Answer ``method path`` with ``answers`` in turn; the last one repeats."""
        self.scripts[(method, path)] = list(answers)

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path]

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """The gateway's check, then the scripted answer (the mock transport's handler)."""
        url = URL(request.url, encoded=True)
        headers = CIMultiDict(request.headers)
        body = request.body or b""
        path = url.raw_path
        self.seen.append(Seen(request.method, path, url.raw_query_string, headers, body))
        problem = self._check(request.method, url, headers, body)
        if problem:
            self.problems.append(f"{request.method} {path}: {problem}")
            return gateway_error(401, "APIGW.0301", "Incorrect IAM authentication information")
        answers = self.scripts.get((request.method, path))
        if not answers:
            return gateway_error(
                404, "APIGW.0101", "The API does not exist or has not been published"
            )
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return await answer(request)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """The same script behind a real socket (aiohttp's handler)."""
        url = f"http://{request.host}{request.rel_url.raw_path_qs}"
        sent = HttpRequest(request.method, url, dict(request.headers), await request.read())
        try:
            answer = await self.handle(sent)
        except Hang:
            await self.release.wait()
            return web.json_response({})
        except Drop as drop:
            transport = request.transport
            assert transport is not None
            if drop.rst:
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            await self.release.wait()
            return web.json_response({})
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    def _check(self, method: str, url: URL, headers: CIMultiDict[str], body: bytes) -> str | None:
        """What the gateway would reject in this request, or None."""
        auth = parse_authorization(headers.get("Authorization", ""))
        if auth is None or auth.access_key != AK:
            return "no or foreign Authorization header"
        query = url.raw_query_string
        if query != canonical_query(url.query.items()):
            return f"wire query {query!r} is not canonical"
        lowered = {name.lower() for name in headers}
        if "x-sdk-date" not in auth.signed_headers or not set(auth.signed_headers) <= lowered:
            return f"signed headers {auth.signed_headers} missing"
        sent = datetime.strptime(headers["X-Sdk-Date"], DATE_FORMAT).replace(tzinfo=UTC)
        if abs(sent.timestamp() - self.clock.now()) > 900:
            return "X-Sdk-Date off by more than 15 minutes"
        expected = compute_signature(
            SK, method, url.raw_path, query, dict(headers), auth.signed_headers, body
        )
        if expected != auth.signature:
            return "signature mismatch"
        project = headers.get("X-Project-Id")
        parts = url.raw_path.split("/")
        if parts[1] == "iam" and project is not None:
            return "X-Project-Id sent to IAM"
        if parts[1] == "ims" and project != self.project_ids.get(parts[2]):
            return f"X-Project-Id {project!r} is not the project of {parts[2]}"
        if body and headers.get("Content-Type") != "application/json;charset=UTF-8":
            return "a body without the JSON content type"
        return None


def gateway_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> HttpResponse:
    body = {"error_code": code, "error_msg": message, "request_id": "req-1"}
    return json_response(status, body, headers)


def answer(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    async def respond(_request: HttpRequest) -> HttpResponse:
        return json_response(status, body, headers)

    return respond


def ims_error(status: int, code: str, message: str) -> Answer:
    return answer(status, {"error": {"code": code, "message": message}})


async def hang(_request: HttpRequest) -> HttpResponse:
    """Served only: no answer until the test ends."""
    raise Hang


def drop(*, rst: bool) -> Answer:
    """Served only: read the request, then close the connection (FIN) or reset it (RST)."""

    async def respond(_request: HttpRequest) -> HttpResponse:
        raise Drop(rst=rst)

    return respond


def image(number: int) -> dict[str, Any]:
    return {
        "id": f"img-{number}",
        "name": f"image {number}",
        "status": "active",
        "__imagetype": "private",
        "__image_size": str(number * 2**30),
        "min_disk": 40,
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def clock() -> VirtualClock:
    return InstantClock(START)


@pytest.fixture
def cloud(clock: VirtualClock) -> Iterator[FakeCloud]:
    fake = FakeCloud(clock)
    yield fake
    fake.release.set()
    assert fake.problems == [], "requests the gateway would have rejected"


@pytest.fixture
async def runner(cloud: FakeCloud) -> AsyncIterator[tuple[web.AppRunner, FakeCloud]]:
    """The script served on 127.0.0.1, for the tests where the socket matters."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", cloud.serve)
    app_runner = web.AppRunner(
        app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
    )
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    cloud.port = app_runner.addresses[0][1]
    try:
        yield app_runner, cloud
    finally:
        cloud.release.set()
        await app_runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@dataclass
class Harness:
    client: ImsClient
    sleeps: list[float]
    config: Config


@pytest.fixture
def make(
    cloud: FakeCloud, session: aiohttp.ClientSession, clock: VirtualClock
) -> Callable[..., Harness]:
    def build(
        *,
        project_ids: dict[str, str] | None = None,
        secret_key: str = SK,
        security_token: str | None = None,
        ims_by_region: dict[str, str] | None = None,
        max_attempts: int = 6,
        page_size: int = 500,
        limits: RateLimits | None = None,
        retry_sleep: Callable[[float], Awaitable[None]] | None = None,
        over_socket: bool = False,
    ) -> Harness:
        sleeps: list[float] = []

        async def record(seconds: float) -> None:
            sleeps.append(seconds)
            if retry_sleep is not None:
                await retry_sleep(seconds)

        tenant = TenantConfig(
            name="acme",
            project_ids={REGION: PROJECT_ID} if project_ids is None else project_ids,
        )
        config = Config(
            tenants={"acme": tenant},
            endpoints=Endpoints(
                ims=f"http://127.0.0.1:{cloud.port}/ims/{{region}}",
                iam=f"http://127.0.0.1:{cloud.port}/iam",
                ims_by_region=ims_by_region or {},
            ),
            timing=Timing(request_timeout=TIMEOUT, backoff_max=2.0),
        )
        client = ImsClient(
            AiohttpTransport(session, TIMEOUT) if over_socket else MockTransport(cloud.handle),
            tenant,
            Credentials(AK, secret_key, security_token),
            config,
            limits or RateLimits(1000.0, clock),
            clock,
            retry_sleep=record,
            max_attempts=max_attempts,
            page_size=page_size,
            rng=random.Random(7),
        )
        return Harness(client, sleeps, config)

    return build


IMAGES = f"/ims/{REGION}/v2/cloudimages"
QUOTA = f"/ims/{REGION}/v1/cloudimages/quota"
COPY_PATH = f"/ims/{REGION}/v1/cloudimages/src-1/cross_region_copy"
JOB_PATH = f"/ims/{REGION}/v1/cloudimages/job/job-1"
LEGACY_JOB_PATH = f"/ims/{REGION}/v1/{PROJECT_ID}/jobs/job-1"
PROJECTS = "/iam/v3/projects"
QUOTA_OK = answer(200, {"quotas": {"resources": [{"type": "image", "used": 3, "quota": 20}]}})


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


@pytest.mark.parametrize(
    "retry_after",
    ["7", format_datetime(datetime.fromtimestamp(START + 7, tz=UTC), usegmt=True)],
    ids=["seconds", "http-date"],
)
async def test_429_waits_at_least_retry_after(
    cloud: FakeCloud, make: Callable[..., Harness], retry_after: str
) -> None:
    """A throttled read waits as long as Retry-After says, even beyond backoff_max (2 s)."""
    throttled = gateway_error(
        429, "APIGW.0308", "The throttling threshold has been reached", {"Retry-After": retry_after}
    )

    async def throttle(_request: HttpRequest) -> HttpResponse:
        return throttled

    cloud.on("GET", QUOTA, throttle, QUOTA_OK)
    harness = make()
    assert await harness.client.get_quota(REGION) == Quota(used=3, quota=20)
    assert len(harness.sleeps) == 1
    assert harness.sleeps[0] >= 7


@pytest.mark.usefixtures("runner")
async def test_get_timeout_is_transient_and_retried(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A read that hangs past request_timeout is TRANSIENT, retried, then given up."""
    cloud.on("GET", QUOTA, hang)
    harness = make(max_attempts=2, over_socket=True)
    with anyio.fail_after(5):
        with pytest.raises(CloudError) as caught:
            await harness.client.get_quota(REGION)
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert "no answer within" in str(caught.value)
    assert len(cloud.requests("GET", QUOTA)) == 2
    assert len(harness.sleeps) == 1


@pytest.mark.usefixtures("runner")
async def test_get_reset_is_transient_and_retried(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A read whose connection is reset every time is TRANSIENT, retried, then given up.

    (aiohttp itself resends an idempotent request once on a dropped connection, so the count
    of GETs is not asserted: only our attempts, seen as sleeps.)
    """
    cloud.on("GET", QUOTA, drop(rst=True))
    harness = make(max_attempts=3, over_socket=True)
    with pytest.raises(CloudError) as caught:
        await harness.client.get_quota(REGION)
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert len(harness.sleeps) == 2
    assert len(cloud.requests("GET", QUOTA)) >= 3


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


async def test_copy_to_a_closed_port_is_not_sent_and_retried(
    runner: tuple[web.AppRunner, FakeCloud], make: Callable[..., Harness]
) -> None:
    """Connection refused means nothing was sent: retried, and it succeeds once IMS listens."""
    app_runner, cloud = runner
    port = closed_port()
    region = "cn-late-1"
    cloud.project_ids[region] = PROJECT_ID
    path = f"/ims/{region}/v1/cloudimages/src-1/cross_region_copy"
    cloud.on("POST", path, answer(200, {"job_id": "job-late"}))

    async def start_listening(_seconds: float) -> None:
        if not any(getattr(site, "_port", None) == port for site in app_runner.sites):
            await web.TCPSite(app_runner, "127.0.0.1", port).start()

    harness = make(
        project_ids={region: PROJECT_ID},
        ims_by_region={region: f"http://127.0.0.1:{port}/ims/{region}"},
        retry_sleep=start_listening,
        over_socket=True,
    )
    assert await harness.client.copy_image(region, "src-1", COPY) == "job-late"
    assert len(harness.sleeps) == 1
    assert len(cloud.requests("POST", path)) == 1


async def test_copy_to_a_closed_port_ends_not_sent(make: Callable[..., Harness]) -> None:
    """Refused on every attempt: NOT_SENT after the attempt budget, safe for the engine to retry."""
    port = closed_port()
    harness = make(
        project_ids={"cn-dead-1": PROJECT_ID},
        ims_by_region={"cn-dead-1": f"http://127.0.0.1:{port}/ims"},
        max_attempts=3,
        over_socket=True,
    )
    with pytest.raises(CloudError) as caught:
        await harness.client.copy_image("cn-dead-1", "src-1", COPY)
    assert caught.value.kind is ErrorKind.NOT_SENT
    assert len(harness.sleeps) == 2


@pytest.mark.usefixtures("runner")
@pytest.mark.parametrize("rst", [True, False], ids=["reset", "closed"])
async def test_copy_connection_lost_is_unknown_and_never_resent(
    cloud: FakeCloud, make: Callable[..., Harness], rst: bool
) -> None:
    """The server read the POST and dropped the connection: UNKNOWN at once, one POST seen."""
    cloud.on("POST", COPY_PATH, drop(rst=rst), answer(200, {"job_id": "job-2"}))
    harness = make(over_socket=True)
    with pytest.raises(CloudError) as caught:
        await harness.client.copy_image(REGION, "src-1", COPY)
    assert caught.value.kind is ErrorKind.UNKNOWN
    assert len(cloud.requests("POST", COPY_PATH)) == 1
    assert harness.sleeps == []


@pytest.mark.usefixtures("runner")
async def test_copy_timeout_is_unknown_and_never_resent(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A POST without an answer within request_timeout is UNKNOWN at once; one POST seen."""
    cloud.on("POST", COPY_PATH, hang, answer(200, {"job_id": "job-2"}))
    harness = make(over_socket=True)
    with anyio.fail_after(5):
        with pytest.raises(CloudError) as caught:
            await harness.client.copy_image(REGION, "src-1", COPY)
    assert caught.value.kind is ErrorKind.UNKNOWN
    assert len(cloud.requests("POST", COPY_PATH)) == 1
    assert harness.sleeps == []


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


# -- projects (IAM) and probe --------------------------------------------------------------------


def projects(*ids: str) -> Answer:
    found = [{"id": i, "name": REGION, "domain_id": DOMAIN_ID, "enabled": True} for i in ids]
    return answer(200, {"projects": found})


async def test_project_id_is_looked_up_once_in_iam(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """Without configured ids, IAM is asked once (even by concurrent calls), unsigned by project."""
    cloud.project_ids[REGION] = "f" * 32
    cloud.on("GET", PROJECTS, projects("f" * 32))
    cloud.on("GET", QUOTA, QUOTA_OK)
    client = make(project_ids={}).client
    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(client.get_quota, REGION)
    await client.get_quota(REGION)
    [lookup] = cloud.requests("GET", PROJECTS)
    assert lookup.query == f"name={REGION}"
    assert "X-Project-Id" not in lookup.headers
    assert len(cloud.requests("GET", QUOTA)) == 6
    assert client.domain_id == DOMAIN_ID


@pytest.mark.parametrize("found", [(), ("a" * 32, "b" * 32)], ids=["none", "two"])
async def test_ambiguous_project_says_what_to_configure(
    cloud: FakeCloud, make: Callable[..., Harness], found: tuple[str, ...]
) -> None:
    """0 or 2 projects of that name: PERMANENT, naming project_ids in [tenants.acme]."""
    cloud.on("GET", PROJECTS, projects(*found))
    harness = make(project_ids={})
    with pytest.raises(CloudError) as caught:
        await harness.client.get_quota(REGION)
    assert caught.value.kind is ErrorKind.PERMANENT
    assert "project_ids" in caught.value.message
    assert "[tenants.acme]" in caught.value.message
    assert cloud.requests("GET", QUOTA) == []


async def test_probe_returns_the_domain_id_even_with_configured_projects(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """probe asks IAM (checking the keys) although the project id is configured."""
    cloud.on("GET", PROJECTS, projects(PROJECT_ID))
    assert await make().client.probe(REGION) == DOMAIN_ID
    assert len(cloud.requests("GET", PROJECTS)) == 1


async def test_probe_without_iam_lists_one_image_instead(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """IAM missing (a private deployment) and ids configured: one listing checks the keys."""
    cloud.on("GET", IMAGES, answer(200, {"images": []}))
    assert await make().client.probe(REGION) == ""
    assert [s.query for s in cloud.requests("GET", IMAGES)] == ["limit=1"]


async def test_probe_without_iam_and_without_ids_fails(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """IAM missing and no configured id: the lookup's error is raised."""
    with pytest.raises(CloudError) as caught:
        await make(project_ids={}).client.probe(REGION)
    assert caught.value.kind is ErrorKind.NOT_FOUND
    assert cloud.requests("GET", IMAGES) == []


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


async def test_every_request_takes_a_token_from_the_hosts_bucket(
    cloud: FakeCloud, make: Callable[..., Harness], clock: VirtualClock
) -> None:
    """Three requests through a 1/s bucket with burst 1 take two seconds of (virtual) time."""
    cloud.on("GET", QUOTA, QUOTA_OK)
    limits = RateLimits(1.0, clock, burst=1)
    client = make(limits=limits).client
    for _ in range(3):
        await client.get_quota(REGION)
    assert clock.now() - START == pytest.approx(2.0)
    assert limits.for_host(f"127.0.0.1:{cloud.port}").tokens < 1


def test_the_proxy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY is used for the IMS hosts, except the ones NO_PROXY names."""
    for name in ("https_proxy", "http_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "iam.example.com")
    proxy, _ = env_proxy(URL("https://ims.cn-north-4.example.com"))
    assert proxy == URL("http://proxy.example:3128")
    assert env_proxy(URL("https://iam.example.com")) == (None, None)


async def test_open_session_leaves_netrc_alone() -> None:
    """The session does not take ~/.netrc credentials (they would clash with the signature)."""
    async with open_session(Config()) as client_session:
        assert not client_session.trust_env


async def test_open_session_with_a_missing_ca_bundle_says_so(tmp_path: Any) -> None:
    """A CA bundle that cannot be read is a PERMANENT error naming the setting."""
    config = Config(endpoints=Endpoints(ca_bundle=str(tmp_path / "missing.pem")))
    with pytest.raises(CloudError, match="ca_bundle"):
        async with open_session(config):
            pass


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
