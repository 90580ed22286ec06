"""``TenantCloud`` straight over the simulator's world: no HTTP, no sleeping, deterministic.

This is the fake the engine's virtual-time tests use. It applies the same constraints as the
HTTP front (both call the world), classifies refusals with ``orchestrator.ims.errors.classify``
exactly as the real client does, and turns injected faults into the errors the real client
would raise:

    429 (APIGW.0308)          TRANSIENT with retry_after, nothing done
    500 / 503                 copy: UNKNOWN, GET: TRANSIENT; nothing done
    reset / hang (timeout)    copy: UNKNOWN, GET: TRANSIENT; nothing done
    lost reply (copy)         the copy IS carried out, then UNKNOWN
    500 after (copy)          the copy IS carried out, then UNKNOWN (HTTP 500)

Every call is recorded in the world's request counters like an HTTP request would be (status
0 for a dropped connection), so ``world.truth()`` reads the same for both fronts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import anyio.lowlevel

from orchestrator.clock import Clock
from orchestrator.config import Config, TenantConfig
from orchestrator.core.cloud import (
    CloudError,
    CopyRequest,
    ErrorKind,
    Image,
    Job,
    Quota,
    TenantCloud,
)
from orchestrator.core.credentials import Credentials
from orchestrator.ims.errors import classify
from orchestrator.simulator.accounts import Account
from orchestrator.simulator.faults import Fault, FaultPlan
from orchestrator.simulator.images import SimError
from orchestrator.simulator.world import World

T = TypeVar("T")
THROTTLE_MESSAGE = (
    "The throttling threshold has been reached: policy user over ratelimit,limit:200,time:1 second"
)


class InMemoryTenantCloud:
    """One account's view of the world, as the engine sees a real cloud through ``TenantCloud``.

    ``secret_key``, when given and wrong, makes every call fail the way a bad signature does
    (401 ``APIGW.0301``, counted, locking the key after 5 in a row).
    """

    def __init__(
        self,
        world: World,
        account_name: str,
        now: Callable[[], float],
        faults: FaultPlan | None = None,
        *,
        secret_key: str | None = None,
        page_size: int = 500,
    ) -> None:
        self.world = world
        self.account: Account = world.account(account_name)
        self.now = now
        self.faults = faults
        self.secret_key = secret_key
        self.page_size = page_size

    # -- TenantCloud ----------------------------------------------------------------------

    async def probe(self, region: str) -> str:
        def lookup(_now: float) -> str:
            if self.account.project(region) is None:
                raise SimError(404, "IAM.0004", f"No project named {region} in this account.")
            return self.account.domain_id

        return await self._call("iam", region, lookup, iam=True)

    async def list_images(
        self,
        region: str,
        *,
        project: str | None = None,
        name: str | None = None,
        image_id: str | None = None,
        private_only: bool = True,
        filters: Mapping[str, str] | None = None,
        priority: float = 0.0,
    ) -> list[Image]:
        query = dict(filters or {})
        if private_only:
            query["__imagetype"] = "private"
        if name is not None:
            query["name"] = name
        if image_id is not None:
            query["id"] = image_id
        project_id = self._project_id(region, project)
        found: list[Image] = []
        marker: str | None = None
        while True:

            def page(now: float, marker: str | None = marker) -> list[dict[str, Any]]:
                return self.world.list_images(
                    self.account.name,
                    region,
                    now=now,
                    project_id=project_id,
                    filters=query,
                    limit=self.page_size,
                    marker=marker,
                )

            images = await self._call("list", region, page)
            found.extend(Image.from_api(raw) for raw in images)
            if len(images) < self.page_size:
                return found
            marker = images[-1]["id"]

    async def copy_image(
        self,
        region: str,
        image_id: str,
        request: CopyRequest,
        *,
        project: str | None = None,
    ) -> str:
        project_id = self._project_id(region, project)

        def submit(now: float) -> str:
            return self.world.copy(
                self.account.name, region, image_id, request.body(), now, project_id=project_id
            )

        return await self._call("copy", region, submit, mutating=True)

    async def get_job(
        self, region: str, job_id: str, *, project: str | None = None, priority: float = 0.0
    ) -> Job:
        project_id = self._project_id(region, project)

        def show(now: float) -> Job:
            self.world.resolve_project(self.account.name, region, project_id)
            return Job.from_api(self.world.job(self.account.name, region, job_id, now))

        return await self._call("job", region, show)

    async def get_quota(self, region: str, *, project: str | None = None) -> Quota:
        project_id = self._project_id(region, project)

        def show(now: float) -> Quota:
            raw = self.world.quota(self.account.name, region, now=now, project_id=project_id)
            return Quota(used=raw["used"], quota=raw["quota"])

        return await self._call("quota", region, show)

    # -- after the copy -------------------------------------------------------------------

    async def image_tags(
        self, region: str, image_id: str, *, project: str | None = None, priority: float = 0.0
    ) -> dict[str, str]:
        pid = self._project_id(region, project)
        name = self.account.name

        def show(now: float) -> dict[str, str]:
            raw = self.world.image_tags(name, region, image_id, now, pid)
            return {tag["key"]: tag["value"] for tag in raw["tags"]}

        return await self._call("tags", region, show)

    async def add_image_tags(
        self,
        region: str,
        image_id: str,
        tags: Mapping[str, str],
        *,
        project: str | None = None,
        priority: float | None = None,
    ) -> None:
        pid = self._project_id(region, project)
        body = {"action": "create", "tags": [{"key": k, "value": v} for k, v in tags.items()]}

        def create(now: float) -> None:
            self.world.tag_action(self.account.name, region, image_id, body, now, pid)

        await self._call("tag", region, create, mutating=True)

    async def update_image(
        self,
        region: str,
        image_id: str,
        changes: Mapping[str, int],
        *,
        project: str | None = None,
        priority: float | None = None,
    ) -> None:
        pid = self._project_id(region, project)
        body = [{"op": "replace", "path": f"/{k}", "value": v} for k, v in changes.items()]

        def patch(now: float) -> None:
            self.world.patch_image(self.account.name, region, image_id, body, now, pid)

        await self._call("patch", region, patch, mutating=True)

    async def image_members(
        self, region: str, image_id: str, *, project: str | None = None, priority: float = 0.0
    ) -> list[str]:
        pid = self._project_id(region, project)

        def show(now: float) -> list[str]:
            raw = self.world.image_members(self.account.name, region, image_id, now, pid)
            return [str(member["member_id"]) for member in raw["members"]]

        return await self._call("members", region, show)

    async def delete_image(self, region: str, image_id: str, *, project: str | None = None) -> None:
        pid = self._project_id(region, project)

        def delete(now: float) -> None:
            self.world.delete_image(self.account.name, region, image_id, now, pid)

        await self._call("delete", region, delete, mutating=True)

    # -- one request ----------------------------------------------------------------------

    def _project_id(self, region: str, project: str | None) -> str | None:
        """A project name (or id) as the caller gives it -> the id the world knows, if any."""
        if project is None:
            return None
        found = self.account.project(region, project)
        return found.id if found is not None else project

    async def _call(
        self,
        kind: str,
        region: str,
        op: Callable[[float], T],
        *,
        mutating: bool = False,
        iam: bool = False,
    ) -> T:
        await anyio.lowlevel.checkpoint()
        now = self.now()
        world, key = self.world, self.account.access_key
        if not iam and region not in world.params.regions:
            raise CloudError(ErrorKind.NOT_SENT, f"cannot resolve the IMS endpoint of {region}")

        def record(status: int) -> None:
            world.record_request(
                now, "POST" if mutating else "GET", kind, self.account.name, status
            )

        self._outage(now, None if iam else region, mutating, record)
        auth = self._auth_problem(now)
        if auth is not None:
            world.note_auth_failure(key, now)
            world.record_request(now, "POST" if mutating else "GET", kind, None, 401)
            raise classify(401, auth[0], auth[1], mutating=mutating)
        world.note_auth_success(key)
        refused = self.account.refusal(kind)
        if refused is not None:
            record(refused[0])
            raise classify(*refused, mutating=mutating)
        fault = self.faults.decide(kind) if self.faults is not None else None
        if fault is not None and not fault.performs:
            raise self._fault_error(fault, mutating, record)
        try:
            result = op(now)
        except SimError as error:
            if fault is not None:  # refused, but the answer is lost all the same
                raise self._fault_error(fault, mutating, record) from None
            record(error.status)
            raise classify(error.status, error.code, error.message, mutating=mutating) from None
        if fault is not None:  # carried out, but the answer is lost
            raise self._fault_error(fault, mutating, record)
        record(200)
        return result

    def _outage(
        self, now: float, region: str | None, mutating: bool, record: Callable[[int], None]
    ) -> None:
        """Raise what the fault plan's outage makes of a call now (refused, or a 503)."""
        outage = self.faults.outage if self.faults is not None else None
        mode = outage.hits(now, region) if outage is not None else None
        if mode == "refuse":
            record(0)
            raise CloudError(ErrorKind.NOT_SENT, "not sent, cannot connect (connection refused)")
        if mode is not None:
            record(503)
            raise classify(503, "APIGW.0201", "Backend unavailable.", mutating=mutating)

    def _auth_problem(self, now: float) -> tuple[str, str] | None:
        key = self.account.access_key
        if self.world.is_locked(key, now):
            return "APIGW.0301", "Incorrect IAM authentication information: the key is locked"
        if self.secret_key is not None and self.secret_key != self.account.secret_key:
            return (
                "APIGW.0301",
                "Incorrect IAM authentication information: verify aksk signature fail",
            )
        expires = self.account.token_expires_at
        if expires is not None and now > expires:
            return "APIGW.0307", "The token must be updated"
        return None

    def _fault_error(
        self, fault: Fault, mutating: bool, record: Callable[[int], None]
    ) -> CloudError:
        dropped = ErrorKind.UNKNOWN if mutating else ErrorKind.TRANSIENT
        if fault is Fault.THROTTLE:
            record(429)
            retry_after = self.faults.retry_after if self.faults is not None else 1.0
            return classify(
                429, "APIGW.0308", THROTTLE_MESSAGE, mutating=mutating, retry_after=retry_after
            )
        if fault in (Fault.ERROR_500, Fault.ERROR_AFTER):
            record(500)
            return classify(500, "IMG.0500", "Internal server error.", mutating=mutating)
        if fault is Fault.ERROR_503:
            record(503)
            return classify(503, "APIGW.0201", "Backend unavailable.", mutating=mutating)
        record(0)
        if fault is Fault.HANG:
            return CloudError(dropped, "the request timed out (no answer)")
        if fault is Fault.LOST_REPLY:
            self.world.note_lost_reply()
            return CloudError(dropped, "the connection was closed before the answer (lost reply)")
        return CloudError(dropped, "the connection was reset by the server")


OpenClouds = Callable[
    [Config, Mapping[str, tuple[TenantConfig, Credentials]], Clock],
    AbstractAsyncContextManager[Mapping[str, TenantCloud]],
]


def in_memory_clouds(
    world: World, faults: FaultPlan | None = None, *, page_size: int = 500
) -> OpenClouds:
    """A cloud factory for ``execute_run`` / ``make_plan``: each tenant is the world's account
    of the same name, on the run's clock; its secret key is checked like a signature."""

    @asynccontextmanager
    async def open_clouds(
        _config: Config, credentials: Mapping[str, tuple[TenantConfig, Credentials]], clock: Clock
    ) -> AsyncIterator[Mapping[str, TenantCloud]]:
        yield {
            name: InMemoryTenantCloud(
                world, name, clock.now, faults, secret_key=creds.secret_key, page_size=page_size
            )
            for name, (_, creds) in credentials.items()
        }

    return open_clouds
