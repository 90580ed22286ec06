"""``ImsClient``: :class:`~orchestrator.core.cloud.TenantCloud` over IMS's (and IAM's) HTTP API.

One client serves one tenant (access key pair) in every region: it knows the API (paths,
paging, projects, the legacy job API) and leaves the signed, retried calls to
:class:`~orchestrator.ims.calls.SignedCalls` (where failures are classified) and the wire to a
:class:`~orchestrator.ims.transport.Transport` (``wire.py``'s, or a mock in tests).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import structlog

from orchestrator.clock import Clock
from orchestrator.config import Config, TenantConfig
from orchestrator.core.cloud import (
    SEND_STOP,
    CloudError,
    CopyRequest,
    ErrorKind,
    Image,
    Job,
    Quota,
    refuses_key,
)
from orchestrator.core.credentials import Credentials
from orchestrator.ims.calls import (
    BACKOFF_BASE,
    MAX_ATTEMPTS,
    Backoff,
    Params,
    SignedCalls,
)
from orchestrator.ims.ratelimit import READ, RateLimits
from orchestrator.ims.signer import unreserved
from orchestrator.ims.transport import Transport

if TYPE_CHECKING:
    from orchestrator.core.cloud import TenantCloud

log = structlog.get_logger(__name__)

PAGE_SIZE = 500
API_NOT_FOUND = "APIGW.0101"


@dataclass(frozen=True)
class _Project:
    id: str
    domain_id: str


def _segment(value: str) -> str:
    """One path segment, percent-encoded (ids are hex, but never trust a string in a path):
    made only of what ``quote(value, safe="")`` leaves as it is (``unreserved``), it is its
    own encoding."""
    if unreserved(value):
        return value
    return quote(value, safe="")


class ImsClient:
    """One tenant's IMS (and IAM) over HTTP. Implements ``TenantCloud``."""

    def __init__(
        self,
        transport: Transport,
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
        self._tenant = tenant
        self._config = config
        self._endpoints = tenant.endpoints_in(config)
        backoff = Backoff(backoff_base, config.timing.backoff_max, rng or random.Random())
        self._calls = SignedCalls(
            transport,
            credentials,
            limits,
            clock,
            backoff,
            retry_sleep=retry_sleep,
            max_attempts=max_attempts,
        )
        self._call = self._calls.call
        self._page_size = page_size
        self._projects: dict[str, _Project] = {}
        self._project_locks: dict[str, anyio.Lock] = {}
        self._bases: dict[str, str] = {}  # region -> IMS base URL
        # (region, project) -> the IMS base and the project id, once the id is known: what
        # every call to IMS needs, found by one look-up (see _place).
        self._places: dict[tuple[str, str | None], tuple[str, str]] = {}
        self._legacy_job_api: set[str] = set()  # IMS bases that lack GET /v1/cloudimages/job
        self.domain_id: str | None = None

    # -- TenantCloud ---------------------------------------------------------------------------

    async def probe(self, region: str) -> str:
        """Check the credentials with one request in ``region``; the account (domain) id.

        With the region's project id configured, IAM is not asked at all (nor later, if every
        project the tenant uses is configured): one image listing checks the key, and the
        account is the config's ``account`` (``""``: unknown, a window of its own). Else the
        IAM look-up of the region's project checks the key and names the account.
        """
        configured = self._tenant.project_ids.get(region)
        if configured:
            base = self._ims_base(region)
            await self._call(
                "GET", base, "/v2/cloudimages", params=[("limit", "1")], project_id=configured
            )
            return self._tenant.account or ""
        try:
            project = await self._lookup_project(region)
        except CloudError as err:
            if err.kind == ErrorKind.AUTH and not refuses_key(err.code, err.status):
                raise CloudError(
                    err.kind,
                    f"IAM refused the project look-up ({err.message}): grant this user "
                    f"iam:projects:list, or set project_ids for {region} (and every project "
                    f"the tenant uses) in [tenants.{self._tenant.name}] so that IAM is not "
                    "asked",
                    code=err.code,
                    status=err.status,
                    request_id=err.request_id,
                ) from err
            raise
        self._projects.setdefault(region, project)
        return project.domain_id or self._tenant.account or ""

    async def list_images(
        self,
        region: str,
        *,
        project: str | None = None,
        name: str | None = None,
        image_id: str | None = None,
        private_only: bool = True,
        filters: Mapping[str, str] | None = None,
        priority: float = READ,
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
            body = await self._ims(
                "GET", region, project, "/v2/cloudimages", params=params, priority=priority
            )
            raw = body.get("images")
            # An answer's JSON objects are dicts (json's): isinstance(x, dict) is a C check,
            # where the Mapping ABC's runs in Python.
            page = [item for item in raw if isinstance(item, dict)] if raw else []
            images.extend(Image.from_api(item) for item in page)
            next_marker = _next_marker(body, page, self._page_size)
            if next_marker is None or next_marker == marker:
                return images
            marker = next_marker

    async def copy_image(
        self,
        region: str,
        image_id: str,
        request: CopyRequest,
        *,
        project: str | None = None,
    ) -> str:
        path = f"/v1/cloudimages/{_segment(image_id)}/cross_region_copy"
        # The project look-up is a local wait too: a stop during it sends nothing.
        place = self._places.get((region, project))
        if place is None:
            place = await self._calls.unless(SEND_STOP.get(), self._place, region, project)
        base, project_id = place
        body = await self._call("POST", base, path, body=request.body(), project_id=project_id)
        job_id = body.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise CloudError(
                ErrorKind.UNKNOWN,
                "IMS accepted the copy request but its answer carries no job_id",
                status=200,
            )
        return job_id

    async def get_job(
        self, region: str, job_id: str, *, project: str | None = None, priority: float = 0.0
    ) -> Job:
        base, project_id = self._places.get((region, project)) or await self._place(region, project)
        if base not in self._legacy_job_api:
            path = f"/v1/cloudimages/job/{_segment(job_id)}"
            try:
                return Job.from_api(
                    await self._call("GET", base, path, project_id=project_id, priority=priority)
                )
            except CloudError as err:
                if err.status != 404 or err.code != API_NOT_FOUND:
                    raise
            # The gateway does not know the recommended API here: use the deprecated one.
            self._legacy_job_api.add(base)
            log.info("ims.legacy_job_api", region=region, base=base)
        path = f"/v1/{_segment(project_id)}/jobs/{_segment(job_id)}"
        return Job.from_api(
            await self._call("GET", base, path, project_id=project_id, priority=priority)
        )

    async def get_quota(self, region: str, *, project: str | None = None) -> Quota:
        body = await self._ims("GET", region, project, "/v1/cloudimages/quota")
        quotas = body.get("quotas")
        resources = quotas.get("resources") if isinstance(quotas, Mapping) else None
        for item in resources if isinstance(resources, list) else []:
            if isinstance(item, Mapping) and item.get("type") == "image":
                try:
                    return Quota(used=int(item["used"]), quota=int(item["quota"]))
                except (KeyError, TypeError, ValueError, OverflowError):
                    break
        raise CloudError(
            ErrorKind.PERMANENT, f"the quota answer of IMS in {region} has no image quota"
        )

    # -- after the copy ------------------------------------------------------------------------

    async def image_tags(
        self, region: str, image_id: str, *, project: str | None = None, priority: float = READ
    ) -> dict[str, str]:
        pid = await self._project_id(region, project)
        path = f"/v2/{_segment(pid)}/images/{_segment(image_id)}/tags"
        body = await self._ims("GET", region, project, path, priority=priority)
        raw = body.get("tags")
        return {
            str(tag["key"]): str(tag.get("value") or "")
            for tag in (raw if isinstance(raw, list) else [])
            if isinstance(tag, Mapping) and tag.get("key")
        }

    async def add_image_tags(
        self,
        region: str,
        image_id: str,
        tags: Mapping[str, str],
        *,
        project: str | None = None,
        priority: float | None = None,
    ) -> None:
        pid = await self._project_id(region, project)
        path = f"/v2/{_segment(pid)}/images/{_segment(image_id)}/tags/action"
        body = {"action": "create", "tags": [{"key": k, "value": v} for k, v in tags.items()]}
        await self._ims("POST", region, project, path, body=body, priority=priority)

    async def update_image(
        self,
        region: str,
        image_id: str,
        changes: Mapping[str, int],
        *,
        project: str | None = None,
        priority: float | None = None,
    ) -> None:
        ops = [
            {"op": "replace", "path": f"/{key}", "value": value} for key, value in changes.items()
        ]
        path = f"/v2/cloudimages/{_segment(image_id)}"
        await self._ims("PATCH", region, project, path, body=ops, priority=priority)

    async def image_members(
        self, region: str, image_id: str, *, project: str | None = None, priority: float = READ
    ) -> list[str]:
        base, pid = self._places.get((region, project)) or await self._place(region, project)
        path = f"/v1/{_segment(pid)}/cloudimages/{_segment(image_id)}/members"
        raw = (await self._call("GET", base, path, project_id=pid, priority=priority)).get(
            "members"
        )
        return [
            str(member["member_id"])
            for member in (raw if isinstance(raw, list) else [])
            if isinstance(member, dict) and member.get("member_id")
        ]

    async def delete_image(self, region: str, image_id: str, *, project: str | None = None) -> None:
        await self._ims("DELETE", region, project, f"/v2/images/{_segment(image_id)}")

    def _ims_base(self, region: str) -> str:
        """The IMS base URL in ``region`` (formatted once per region, not once per call)."""
        base = self._bases.get(region)
        if base is None:
            base = self._bases[region] = self._endpoints.ims_for(region)
        return base

    # -- projects ------------------------------------------------------------------------------

    def _known_project(self, region: str, project: str | None) -> str | None:
        """The project id of ``project`` if configured or already looked up (no wait)."""
        name = project or region
        configured = self._tenant.project_ids.get(name)
        if configured:
            return configured
        known = self._projects.get(name)
        return known.id if known is not None else None

    async def _place(self, region: str, project: str | None) -> tuple[str, str]:
        """The IMS base in ``region`` and the id of ``project`` (looked up if need be), kept for
        the next calls' one look-up in ``_places`` (neither changes once known)."""
        project_id = await self._project_id(region, project)
        place = self._places[region, project] = (self._ims_base(region), project_id)
        return place

    async def _project_id(self, region: str, project: str | None) -> str:
        """The project id of ``project`` (default: the region's default project, named so)."""
        found = self._known_project(region, project)
        if found:
            return found
        name = project or region
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
            "GET", self._endpoints.iam.rstrip("/"), "/v3/projects", params=[("name", name)]
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

    def _ims(
        self,
        method: str,
        region: str,
        project: str | None,
        path: str,
        *,
        params: Params = (),
        body: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        priority: float | None = None,
    ) -> Awaitable[dict[str, Any]]:
        """A call to IMS in ``region`` as ``project``: the call's own coroutine when the project
        id is known (no coroutine of this one around it, for every read after a copy), else
        one that looks the project up first."""
        place = self._places.get((region, project))
        if place is None:
            return self._ims_looked_up(method, region, project, path, params, body, priority)
        base, project_id = place
        return self._call(
            method, base, path, params=params, body=body, project_id=project_id, priority=priority
        )

    async def _ims_looked_up(
        self,
        method: str,
        region: str,
        project: str | None,
        path: str,
        params: Params,
        body: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
        priority: float | None,
    ) -> dict[str, Any]:
        base, project_id = await self._place(region, project)
        return await self._call(
            method, base, path, params=params, body=body, project_id=project_id, priority=priority
        )


def _next_marker(
    body: Mapping[str, Any], page: Sequence[Mapping[str, Any]], limit: int
) -> str | None:
    """Where the next page starts, or None after the last one."""
    if not page:
        return None
    page_info = body.get("page_info")
    marker = page_info.get("next_marker") if isinstance(page_info, dict) else None
    if marker:
        return str(marker)
    if len(page) < limit:
        return None
    last = page[-1].get("id")
    return str(last) if last else None


if TYPE_CHECKING:  # mypy proves that the client satisfies the seam

    def _satisfies_seam(client: ImsClient) -> TenantCloud:
        return client
