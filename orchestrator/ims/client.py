"""``ImsClient``: the aiohttp implementation of :class:`~orchestrator.core.cloud.TenantCloud`.

One client serves one tenant (access key pair) in every region. Each request is rate limited
per host, signed (``SDK-HMAC-SHA256``) over exactly the path, query and body bytes it sends,
and its failure is translated here, at the boundary, into a classified :class:`CloudError`:

    connection refused, DNS, TLS handshake   -> NOT_SENT   (retried: nothing left this machine)
    timeout, reset, lost reply on a GET      -> TRANSIENT  (retried)
    timeout, reset, lost reply on the POST   -> UNKNOWN    (raised at once: never re-POST blindly)
    an HTTP error answer                     -> errors.classify (429 retried, AUTH never)

Reads and the copy POST share one retry loop (tenacity) that retries only NOT_SENT and
TRANSIENT; for the POST the only TRANSIENT answer is a gateway refusal (429 / ``APIGW.0308``),
which the service never saw.
"""

from __future__ import annotations

import json
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import aiohttp
import anyio
import structlog
from aiohttp.helpers import get_env_proxy_for_url
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from yarl import URL

from orchestrator.clock import Clock
from orchestrator.config import Config, TenantConfig
from orchestrator.core.cloud import CloudError, CopyRequest, ErrorKind, Image, Job, Quota
from orchestrator.core.credentials import Credentials
from orchestrator.ims.errors import classify, parse_error_body
from orchestrator.ims.ratelimit import RateLimits
from orchestrator.ims.signer import DATE_FORMAT, canonical_query, sign

if TYPE_CHECKING:
    from orchestrator.core.cloud import TenantCloud

log = structlog.get_logger(__name__)

JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
PROJECT_HEADER = "X-Project-Id"
PAGE_SIZE = 500
MAX_ATTEMPTS = 6
BACKOFF_BASE = 0.5
API_NOT_FOUND = "APIGW.0101"
RETRYABLE = frozenset({ErrorKind.NOT_SENT, ErrorKind.TRANSIENT})
# IAM failures that mean "no IAM here" (a private deployment) rather than "bad credentials".
IAM_UNAVAILABLE = frozenset({ErrorKind.NOT_FOUND, ErrorKind.PERMANENT, ErrorKind.NOT_SENT})

Params = Sequence[tuple[str, str]]


@asynccontextmanager
async def open_session(config: Config) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for the clients: proxies from the environment, the configured CA bundle."""
    ssl_option: ssl.SSLContext | bool = True
    if config.endpoints.ca_bundle:
        try:
            ssl_option = ssl.create_default_context(cafile=config.endpoints.ca_bundle)
        except OSError as exc:  # ssl.SSLError is an OSError too
            raise CloudError(
                ErrorKind.PERMANENT,
                f"cannot load the CA bundle {config.endpoints.ca_bundle!r} ([endpoints] "
                f"ca_bundle): {exc}",
            ) from exc
    connector = aiohttp.TCPConnector(ssl=ssl_option)
    timeout = aiohttp.ClientTimeout(total=config.timing.request_timeout)
    # Not trust_env: the clients apply the environment's proxy themselves (env_proxy).
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=False
    ) as session:
        yield session


Proxy = tuple[URL | None, aiohttp.BasicAuth | None]
# origin -> its proxy, read from the environment once per process: the look-up walks every
# environment variable (thousands with a thousand tenants' keys) and reads ~/.netrc.
_PROXIES: dict[str, Proxy] = {}


def env_proxy(url: URL) -> Proxy:
    """The proxy that HTTPS_PROXY / HTTP_PROXY / NO_PROXY choose for ``url`` (aiohttp's rule).

    The session does not ``trust_env``: aiohttp would then look the proxy up in a worker thread
    on every request (most of a request's CPU cost), and add ``~/.netrc`` credentials that
    clash with the signed Authorization header (a ValueError on every request).
    """
    try:
        return get_env_proxy_for_url(url)
    except LookupError:
        return None, None


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, CloudError) and exc.kind in RETRYABLE


class _Backoff:
    """Full-jitter exponential backoff, capped, and never shorter than the server's Retry-After."""

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self._base = base
        self._cap = cap
        self._rng = rng

    def __call__(self, state: RetryCallState) -> float:
        exponent = min(state.attempt_number - 1, 32)
        delay = self._rng.uniform(0.0, min(self._cap, self._base * 2**exponent))
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, CloudError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay


@dataclass(frozen=True)
class _Project:
    id: str
    domain_id: str


def _segment(value: str) -> str:
    """One path segment, percent-encoded (ids are hex, but never trust a string in a path)."""
    return quote(value, safe="")


class ImsClient:
    """One tenant's IMS (and IAM) over aiohttp. Implements ``TenantCloud``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tenant: TenantConfig,
        credentials: Credentials,
        config: Config,
        limits: RateLimits,
        clock: Clock,
        *,
        retry_sleep: Callable[[float], Awaitable[None]] | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base: float = BACKOFF_BASE,
        page_size: int = PAGE_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._tenant = tenant
        self._credentials = credentials
        self._config = config
        self._limits = limits
        self._clock = clock
        self._retry_sleep = retry_sleep or clock.sleep
        self._max_attempts = max(1, max_attempts)
        self._backoff = _Backoff(backoff_base, config.timing.backoff_max, rng or random.Random())
        self._page_size = page_size
        self._timeout = aiohttp.ClientTimeout(total=config.timing.request_timeout)
        self._projects: dict[str, _Project] = {}
        self._project_locks: dict[str, anyio.Lock] = {}
        self._legacy_job_api: set[str] = set()  # IMS bases that lack GET /v1/cloudimages/job
        self.domain_id: str | None = None

    # -- TenantCloud ---------------------------------------------------------------------------

    async def probe(self, region: str) -> str:
        """Check the credentials with one IAM lookup of ``region``'s project; the domain id.

        Where IAM cannot be used (a private deployment) but the project id is configured, one
        image listing checks the credentials instead, and the domain id is ``""``.
        """
        try:
            project = await self._lookup_project(region)
        except CloudError as err:
            configured = self._tenant.project_ids.get(region)
            if err.kind not in IAM_UNAVAILABLE or not configured:
                raise
            log.warning(
                "ims.probe_without_iam",
                tenant=self._tenant.name,
                region=region,
                reason=str(err),
            )
            base = self._config.endpoints.ims_for(region)
            await self._call(
                "GET", base, "/v2/cloudimages", params=[("limit", "1")], project_id=configured
            )
            return ""
        self._projects.setdefault(region, project)
        return project.domain_id

    async def list_images(
        self,
        region: str,
        *,
        project: str | None = None,
        name: str | None = None,
        image_id: str | None = None,
        private_only: bool = True,
        filters: Mapping[str, str] | None = None,
    ) -> list[Image]:
        query: list[tuple[str, str]] = [("limit", str(self._page_size))]
        if private_only:
            query.append(("__imagetype", "private"))
        if name is not None:
            query.append(("name", name))
        if image_id is not None:
            query.append(("id", image_id))
        query.extend((key, value) for key, value in (filters or {}).items() if key != "marker")
        images: list[Image] = []
        marker: str | None = None
        while True:
            params = [*query, ("marker", marker)] if marker else query
            body = await self._ims("GET", region, project, "/v2/cloudimages", params=params)
            raw = body.get("images")
            page = [item for item in raw if isinstance(item, Mapping)] if raw else []
            images.extend(Image.from_api(item) for item in page)
            next_marker = _next_marker(body, page, self._page_size)
            if next_marker is None or next_marker == marker:
                return images
            marker = next_marker

    async def copy_image(
        self, region: str, image_id: str, request: CopyRequest, *, project: str | None = None
    ) -> str:
        path = f"/v1/cloudimages/{_segment(image_id)}/cross_region_copy"
        body = await self._ims("POST", region, project, path, body=request.body())
        job_id = body.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise CloudError(
                ErrorKind.UNKNOWN,
                "IMS accepted the copy request but its answer carries no job_id",
                status=200,
            )
        return job_id

    async def get_job(self, region: str, job_id: str, *, project: str | None = None) -> Job:
        base = self._config.endpoints.ims_for(region)
        project_id = await self._project_id(region, project)
        if base not in self._legacy_job_api:
            path = f"/v1/cloudimages/job/{_segment(job_id)}"
            try:
                return Job.from_api(await self._call("GET", base, path, project_id=project_id))
            except CloudError as err:
                if err.status != 404 or err.code != API_NOT_FOUND:
                    raise
            # The gateway does not know the recommended API here: use the deprecated one.
            self._legacy_job_api.add(base)
            log.info("ims.legacy_job_api", region=region, base=base)
        path = f"/v1/{_segment(project_id)}/jobs/{_segment(job_id)}"
        return Job.from_api(await self._call("GET", base, path, project_id=project_id))

    async def get_quota(self, region: str, *, project: str | None = None) -> Quota:
        body = await self._ims("GET", region, project, "/v1/cloudimages/quota")
        quotas = body.get("quotas")
        resources = quotas.get("resources") if isinstance(quotas, Mapping) else None
        for item in resources if isinstance(resources, list) else []:
            if isinstance(item, Mapping) and item.get("type") == "image":
                try:
                    return Quota(used=int(item["used"]), quota=int(item["quota"]))
                except (KeyError, TypeError, ValueError):
                    break
        raise CloudError(
            ErrorKind.PERMANENT, f"the quota answer of IMS in {region} has no image quota"
        )

    # -- projects ------------------------------------------------------------------------------

    async def _project_id(self, region: str, project: str | None) -> str:
        """The project id of ``project`` (default: the region's default project, named so)."""
        name = project or region
        configured = self._tenant.project_ids.get(name)
        if configured:
            return configured
        known = self._projects.get(name)
        if known is not None:
            return known.id
        lock = self._project_locks.setdefault(name, anyio.Lock())
        async with lock:  # one lookup in flight per name; the others wait for its answer
            known = self._projects.get(name)
            if known is None:
                known = await self._lookup_project(name)
                self._projects[name] = known
        return known.id

    async def _lookup_project(self, name: str) -> _Project:
        """``GET {iam}/v3/projects?name=`` (signed, without X-Project-Id)."""
        body = await self._call(
            "GET", self._config.endpoints.iam.rstrip("/"), "/v3/projects", params=[("name", name)]
        )
        raw = body.get("projects")
        found = [
            item
            for item in (raw if isinstance(raw, list) else [])
            if isinstance(item, Mapping) and item.get("name", name) == name and item.get("id")
        ]
        if len(found) != 1:
            what = "no project" if not found else f"{len(found)} projects"
            raise CloudError(
                ErrorKind.PERMANENT,
                f"IAM lists {what} named {name!r} for tenant {self._tenant.name!r}: set "
                f'project_ids = {{ "{name}" = "<project id>" }} in [tenants.{self._tenant.name}]',
            )
        project = _Project(id=str(found[0]["id"]), domain_id=str(found[0].get("domain_id") or ""))
        if project.domain_id:
            self.domain_id = project.domain_id
        return project

    # -- HTTP ----------------------------------------------------------------------------------

    async def _ims(
        self,
        method: str,
        region: str,
        project: str | None,
        path: str,
        *,
        params: Params = (),
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        project_id = await self._project_id(region, project)
        base = self._config.endpoints.ims_for(region)
        return await self._call(method, base, path, params=params, body=body, project_id=project_id)

    async def _call(
        self,
        method: str,
        base: str,
        path: str,
        *,
        params: Params = (),
        body: Mapping[str, Any] | None = None,
        project_id: str | None = None,
    ) -> dict[str, Any]:
        """One logical call: attempts until success, a final error, or the attempt budget."""

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            log.info(
                "ims.retry",
                method=method,
                path=path,
                attempt=state.attempt_number,
                wait=round(state.next_action.sleep, 3) if state.next_action else None,
                error=str(exc),
                kind=exc.kind.value if isinstance(exc, CloudError) else None,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._backoff,
            retry=retry_if_exception(_retryable),
            sleep=self._retry_sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(method, base, path, params, body, project_id)
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover

    async def _attempt(
        self,
        method: str,
        base: str,
        path: str,
        params: Params,
        body: Mapping[str, Any] | None,
        project_id: str | None,
    ) -> dict[str, Any]:
        """Send one signed request; its JSON answer, or a classified CloudError."""
        mutating = method != "GET"
        split = urlsplit(base)
        host = split.netloc.rpartition("@")[2]
        full_path = split.path + path
        query = canonical_query(params)
        payload = b"" if body is None else json.dumps(body).encode()
        headers: dict[str, str] = {}
        if body is not None:
            headers["Content-Type"] = JSON_CONTENT_TYPE
        if project_id is not None:
            headers[PROJECT_HEADER] = project_id
        where = f"{method} {host}{full_path}"

        await self._limits.for_host(host).acquire()
        signed = sign(
            self._credentials, method, host, full_path, query, headers, payload, self._sdk_date()
        )
        url = URL(
            f"{split.scheme}://{host}{full_path}" + (f"?{query}" if query else ""), encoded=True
        )
        origin = f"{split.scheme}://{host}"
        proxy = _PROXIES.get(origin)
        if proxy is None:
            proxy = _PROXIES[origin] = env_proxy(URL(origin))
        try:
            async with self._session.request(
                method,
                url,
                headers=signed,
                data=payload if body is not None else None,
                timeout=self._timeout,
                allow_redirects=False,
                proxy=proxy[0],
                proxy_auth=proxy[1],
            ) as response:
                raw = await response.read()
                status = response.status
                answer_headers = response.headers
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            raise self._translate(exc, where, mutating=mutating) from exc

        if status >= 300:
            code, message, request_id = parse_error_body(raw)
            raise classify(
                status,
                code,
                message,
                mutating=mutating,
                retry_after=self._retry_after(answer_headers.get("Retry-After")),
                request_id=request_id or answer_headers.get("X-Request-Id"),
            )
        return self._decode(raw, where, status, mutating=mutating)

    def _translate(self, exc: Exception, where: str, *, mutating: bool) -> CloudError:
        """A third-party exception as a CloudError: was the request sent, and may it be resent?"""
        lost = ErrorKind.UNKNOWN if mutating else ErrorKind.TRANSIENT
        name = type(exc).__name__
        if isinstance(exc, aiohttp.ClientSSLError):
            return CloudError(
                ErrorKind.NOT_SENT,
                f"{where}: TLS handshake failed ({name}: {exc}); if the endpoint uses a private "
                "CA, set [endpoints] ca_bundle",
            )
        # Before the generic ClientOSError: ClientConnectorError (refused, DNS, proxy) is one.
        if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return CloudError(ErrorKind.NOT_SENT, f"{where}: not sent, cannot connect ({exc})")
        if isinstance(exc, aiohttp.InvalidURL):
            return CloudError(ErrorKind.PERMANENT, f"{where}: invalid URL ({exc})")
        if isinstance(exc, TimeoutError):
            seconds = self._config.timing.request_timeout
            return CloudError(lost, f"{where}: no answer within {seconds:g}s ({name})")
        return CloudError(lost, f"{where}: connection lost before the answer ({name}: {exc})")

    @staticmethod
    def _decode(raw: bytes, where: str, status: int, *, mutating: bool) -> dict[str, Any]:
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            kind = ErrorKind.UNKNOWN if mutating else ErrorKind.TRANSIENT
            raise CloudError(kind, f"{where}: the answer is not a JSON object", status=status)
        return body

    def _retry_after(self, value: str | None) -> float | None:
        """``Retry-After`` in seconds: a number, or an HTTP date relative to the clock."""
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, moment.timestamp() - self._clock.now())

    def _sdk_date(self) -> str:
        return datetime.fromtimestamp(self._clock.now(), tz=UTC).strftime(DATE_FORMAT)


def _next_marker(body: Mapping[str, Any], page: list[Mapping[str, Any]], limit: int) -> str | None:
    """Where the next page starts, or None after the last one."""
    if not page:
        return None
    page_info = body.get("page_info")
    marker = page_info.get("next_marker") if isinstance(page_info, Mapping) else None
    if marker:
        return str(marker)
    if len(page) < limit:
        return None
    last = page[-1].get("id")
    return str(last) if last else None


if TYPE_CHECKING:  # mypy proves that the client satisfies the seam

    def _satisfies_seam(client: ImsClient) -> TenantCloud:
        return client
