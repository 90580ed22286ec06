"""A scripted IMS and IAM for the client's tests, checked the way the gateway checks requests.

Every request is checked as the gateway would (signature recomputed from what was sent,
canonical wire query, X-Project-Id on IMS calls and not on IAM calls); a mismatch is kept in
``problems`` and fails the test at teardown. The same script answers through the mock transport
(``FakeCloud.handle``) or behind a real socket (``FakeCloud.serve``), where ``hang`` and
``drop`` act on the connection itself.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from orchestrator.config import Config, Endpoints, TenantConfig, Timing
from orchestrator.core.cloud import CopyRequest
from orchestrator.core.credentials import Credentials
from orchestrator.ims.client import ImsClient
from orchestrator.ims.ratelimit import RateLimits
from orchestrator.ims.signer import (
    DATE_FORMAT,
    canonical_query,
    compute_signature,
    parse_authorization,
)
from orchestrator.ims.transport import HttpRequest, HttpResponse, Transport
from tests.mock_transport import json_response
from tests.virtual_clock import VirtualClock

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


@dataclass
class Harness:
    client: ImsClient
    sleeps: list[float]
    config: Config


def build_harness(
    cloud: FakeCloud,
    clock: VirtualClock,
    transport: Transport,
    *,
    project_ids: dict[str, str] | None = None,
    secret_key: str = SK,
    security_token: str | None = None,
    ims_by_region: dict[str, str] | None = None,
    max_attempts: int = 6,
    page_size: int = 500,
    limits: RateLimits | None = None,
    retry_sleep: Callable[[float], Awaitable[None]] | None = None,
) -> Harness:
    """A client of tenant ``acme`` whose IMS and IAM are ``cloud``, over ``transport``; its
    retry sleeps are recorded (and passed on to ``retry_sleep``), never slept."""
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
        transport,
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


IMAGES = f"/ims/{REGION}/v2/cloudimages"
QUOTA = f"/ims/{REGION}/v1/cloudimages/quota"
COPY_PATH = f"/ims/{REGION}/v1/cloudimages/src-1/cross_region_copy"
JOB_PATH = f"/ims/{REGION}/v1/cloudimages/job/job-1"
LEGACY_JOB_PATH = f"/ims/{REGION}/v1/{PROJECT_ID}/jobs/job-1"
PROJECTS = "/iam/v3/projects"
QUOTA_OK = answer(200, {"quotas": {"resources": [{"type": "image", "used": 3, "quota": 20}]}})
