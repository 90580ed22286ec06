"""The simulator's HTTP front: IMS and IAM for many regions on one aiohttp application.

Routes (a client configured with the IMS template ``http://127.0.0.1:PORT/ims/{region}`` and
IAM ``http://127.0.0.1:PORT/iam`` works unchanged):

    GET  /ims/{region}/v2/cloudimages                              list   {"images": [...]}
    POST /ims/{region}/v1/cloudimages/{image_id}/cross_region_copy copy   {"job_id": ...}
    GET  /ims/{region}/v1/cloudimages/job/{job_id}                 job
    GET  /ims/{region}/v1/{project_id}/jobs/{job_id}               job    (deprecated form)
    GET  /ims/{region}/v1/cloudimages/quota                        quota
    tags, PATCH, members, DELETE: orchestrator/simulator/app_after.py
    GET  /iam/v3/projects?name=                                    iam
    GET  /_sim/health, GET /_sim/truth, GET /_sim/requests, GET|POST /_sim/faults,
    POST /_sim/occupy, POST /_sim/fail_job, POST /_sim/deny        admin, never signed

Every IMS/IAM request must carry a valid SDK-HMAC-SHA256 signature, checked by the gateway
(orchestrator/simulator/gateway.py: 401 ``APIGW.0301``, ``APIGW.0303`` for a skewed
``X-Sdk-Date``, ``APIGW.0307`` for an expired temporary token; a key locked after 5 failures).
IMS calls act in the project named by ``X-Project-Id`` (or the path's project id): missing is
400 ``IMG.0001``, not a project of this account in this region is 400 ``IMG.0108``. A job of
another account or region, or an unknown one, is 404 ``{"error": {"code": "IMG.0027"}}``.
Gateway errors use ``{"error_msg", "error_code", "request_id"}``, IMS errors
``{"error": {"message", "code"}}``. ``Retry-After`` may be fractional (accelerated time).

(Over 400 lines: one route table for IMS and IAM; the gateway, the calls after a copy and the
world live apart.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web

from orchestrator.simulator.accounts import Account, Project
from orchestrator.simulator.app_after import add_after_copy_routes
from orchestrator.simulator.faults import Fault, FaultPlan
from orchestrator.simulator.gateway import (
    NO_API_MESSAGE,
    THROTTLE_MESSAGE,
    authenticate,
    gateway_error,
    ims_error,
)
from orchestrator.simulator.images import SimError
from orchestrator.simulator.scenario import build_world, load_scenario
from orchestrator.simulator.world import World
from orchestrator.state.atomic import write_atomic

Op = Callable[[Account, web.Request, bytes, float], Any]


class SimulatorService:
    """The handlers, over one world and a replaceable fault plan."""

    def __init__(self, world: World, faults: FaultPlan | None, now: Callable[[], float]) -> None:
        self.world = world
        self.faults = faults
        self.now = now
        self._closing = asyncio.Event()

    # -- the IMS and IAM endpoints ------------------------------------------------------

    def _outage(
        self, request: web.Request, kind: str, region: str | None, now: float
    ) -> web.StreamResponse | None:
        """The answer during the fault plan's outage (a 503, or none at all), else None."""
        outage = self.faults.outage if self.faults is not None else None
        mode = outage.hits(now, region) if outage is not None else None
        if mode is None:
            return None
        self.world.record_request(now, request.method, kind, None, 503 if mode == "503" else 0)
        if mode == "503":
            return gateway_error(503, "APIGW.0201", "Backend unavailable, try again later.")
        if request.transport is not None:  # "refuse": no answer at all
            request.transport.abort()
        return web.Response()

    def _over_rate(
        self, account: Account, host: str, now: float, record: Callable[[int], None]
    ) -> web.Response | None:
        """The gateway's per-user rate (``key_rate``): 429 APIGW.0308 with a Retry-After."""
        retry_after = self.world.gate.admit(account.access_key, host, now)
        if retry_after is None:
            return None
        record(429)
        return gateway_error(
            429, "APIGW.0308", THROTTLE_MESSAGE, {"Retry-After": f"{retry_after:.3f}"}
        )

    async def serve(
        self, request: web.Request, kind: str, op: Op, *, ims: bool = True
    ) -> web.StreamResponse:
        now = self.now()
        body = await request.read()
        region = request.match_info.get("region", "")
        if ims and region not in self.world.params.regions:
            return gateway_error(404, "APIGW.0101", NO_API_MESSAGE)
        down = self._outage(request, kind, region if ims else None, now)
        if down is not None:
            return down
        auth = authenticate(self.world, request, body, now)
        if isinstance(auth, web.Response):
            self.world.record_request(
                now, request.method, kind, None, auth.status, path=request.path_qs
            )
            return auth
        account = auth
        fault = self.faults.decide(kind) if self.faults is not None else None

        def record(status: int) -> None:
            self.world.record_request(
                now,
                request.method,
                kind,
                account.name,
                status,
                path=request.path_qs,
                fault=fault.value if fault is not None else "",
            )

        denied = self._over_rate(account, request.host, now, record) or _denied(
            account, kind, record
        )
        if denied is not None:
            return denied
        if fault is not None and not fault.performs:
            return await self._inflict(request, fault, record)
        try:
            result = op(account, request, body, now)
            response = web.json_response(result) if result is not None else web.Response(status=204)
        except SimError as error:
            response = ims_error(error)
        if fault is Fault.LOST_REPLY:
            record(0)
            self.world.note_lost_reply()
            return self._drop(request)
        if fault is Fault.ERROR_AFTER:
            return await self._inflict(request, Fault.ERROR_500, record)
        record(response.status)
        return response

    def project(self, account: Account, request: web.Request) -> Project:
        """The project the IMS call acts in: the path's project id, else ``X-Project-Id``."""
        region = request.match_info["region"]
        project_id = request.match_info.get("project_id") or request.headers.get("X-Project-Id")
        if not project_id:
            raise SimError(400, "IMG.0001", "X-Project-Id is required with AK/SK authentication.")
        return self.world.resolve_project(account.name, region, project_id)

    async def _inflict(
        self, request: web.Request, fault: Fault, record: Callable[[int], None]
    ) -> web.StreamResponse:
        if fault is Fault.THROTTLE:
            record(429)
            retry_after = self.faults.retry_after if self.faults is not None else 1.0
            return gateway_error(
                429, "APIGW.0308", THROTTLE_MESSAGE, {"Retry-After": f"{retry_after:g}"}
            )
        if fault is Fault.ERROR_500:
            record(500)
            return ims_error(SimError(500, "IMG.0500", "Internal server error."))
        if fault is Fault.ERROR_503:
            record(503)
            return gateway_error(503, "APIGW.0201", "Backend unavailable, try again later.")
        record(0)
        if fault is Fault.HANG:
            hang = self.faults.hang_seconds if self.faults is not None else 30.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), hang)
            return self._drop(request)
        if request.transport is not None:  # RESET: an abrupt close, no answer
            request.transport.abort()
        return web.Response()

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.close()
        return web.Response()

    async def list_images(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "list", self._list)

    def _list(self, account: Account, request: web.Request, _body: bytes, now: float) -> Any:
        project = self.project(account, request)
        try:
            limit = int(request.query.get("limit", "500"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            raise SimError(400, "IMG.0001", "The limit must be an integer from 1 to 1000.")
        images = self.world.list_images(
            account.name,
            project.region,
            now=now,
            project_id=project.id,
            filters=dict(request.query),
            limit=limit,
            marker=request.query.get("marker") or None,
        )
        return {"images": images}

    async def copy_image(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "copy", self._copy)

    def _copy(self, account: Account, request: web.Request, body: bytes, now: float) -> Any:
        project = self.project(account, request)
        if not body.strip():
            raise SimError(400, "IMG.0007", "The request body is empty.")
        try:
            payload = json.loads(body)
        except ValueError:
            raise SimError(400, "IMG.0001", "The request message format is invalid.") from None
        image_id = request.match_info["image_id"]
        job_id = self.world.copy(
            account.name, project.region, image_id, payload, now, project_id=project.id
        )
        return {"job_id": job_id}

    async def show_job(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "job", self._job)

    def _job(self, account: Account, request: web.Request, _body: bytes, now: float) -> Any:
        project = self.project(account, request)
        return self.world.job(account.name, project.region, request.match_info["job_id"], now)

    async def show_quota(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "quota", self._quota)

    def _quota(self, account: Account, request: web.Request, _body: bytes, now: float) -> Any:
        project = self.project(account, request)
        quota = self.world.quota(account.name, project.region, now=now, project_id=project.id)
        resource = {"type": "image", "min": 1, "max": 10000, **quota}
        return {"quotas": {"resources": [resource]}}

    async def iam_projects(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "iam", self._iam, ims=False)

    def _iam(self, account: Account, request: web.Request, _body: bytes, _now: float) -> Any:
        name = request.query.get("name")
        projects = [
            {
                "id": project.id,
                "name": project.name,
                "domain_id": account.domain_id,
                "parent_id": account.domain_id,
                "enabled": True,
                "is_domain": False,
                "description": "",
            }
            for region in sorted(account.projects)
            for project in account.projects[region]
            if name is None or project.name == name
        ]
        return {"projects": projects, "links": {"self": str(request.url), "next": None}}

    async def no_api(self, _request: web.Request) -> web.StreamResponse:
        return gateway_error(404, "APIGW.0101", NO_API_MESSAGE)

    # -- admin ----------------------------------------------------------------------------

    async def health(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok", "now": self.now()})

    async def truth(self, _request: web.Request) -> web.StreamResponse:
        truth = self.world.truth(self.now())
        if self.faults is not None:
            truth = replace(truth, faults=self.faults.decided)
        return web.json_response(truth.to_dict())

    async def requests(self, request: web.Request) -> web.StreamResponse:
        """Every IMS/IAM request: [time, method, kind, account, status, path, fault]; only
        those of a ``kind`` and from ``since`` (epoch seconds) on, if asked (a 100,000-item
        run's whole log is large)."""
        kind = request.query.get("kind")
        try:
            since = float(request.query.get("since", "-inf"))
        except ValueError:
            return web.json_response({"error": "since: epoch seconds"}, status=400)
        log = [
            [r.time, r.method, r.kind, r.account, r.status, r.path, r.fault]
            for r in self.world.request_log
            if r.time >= since and (kind is None or r.kind == kind)
        ]
        return web.json_response({"requests": log})

    async def get_faults(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(self.faults.to_json() if self.faults is not None else None)

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await request.json()
            self.faults = None if not raw else FaultPlan.from_json(raw)
        except (ValueError, TypeError, AttributeError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response(self.faults.to_json() if self.faults is not None else None)

    async def occupy(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await request.json()
            jobs = self.world.occupy(
                str(raw["account"]), int(raw.get("count", 1)), float(raw["seconds"]), self.now()
            )
        except (ValueError, TypeError, KeyError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response({"jobs": jobs})

    async def deny(self, request: web.Request) -> web.StreamResponse:
        """``{"account", "kinds": [...], "actions": [...]}``, each list optional and replacing
        the one before (empty: granted again). ``kinds``: the account's user may make no call
        of those kinds (``list``, ``copy``...: the gateway's 403 ``APIGW.0302``). ``actions``:
        IAM actions refused on the calls after a copy (``ims:images:update`` refuses adding
        tags and the PATCH alike; 403 ``IMS.0211`` naming the action, imageops.py)."""
        try:
            raw = await request.json()
            name = str(raw["account"])
            account = self.world.account(name)
            if "kinds" in raw:
                account.denied.clear()
                account.denied.update(str(kind) for kind in raw["kinds"] or ())
            if "actions" in raw:
                self.world.deny_only(name, (str(action) for action in raw["actions"] or ()))
            actions = sorted(action for who, action in self.world.denied if who == name)
        except (ValueError, TypeError, KeyError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response({"denied": sorted(account.denied), "actions": actions})

    async def fail_job(self, request: web.Request) -> web.StreamResponse:
        try:
            raw = await request.json()
            self.world.fail_job(str(raw["job_id"]), self.now(), raw.get("code"), raw.get("reason"))
        except (ValueError, TypeError, KeyError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response({"ok": True})

    async def on_shutdown(self, _app: web.Application) -> None:
        self._closing.set()  # hung requests end at once instead of holding the shutdown


def _denied(
    account: Account, kind: str, record: Callable[[int], None]
) -> web.StreamResponse | None:
    """The 403 when the account's user lacks the permission for ``kind``, else None."""
    refused = account.refusal(kind)
    if refused is None:
        return None
    status, code, message = refused
    record(status)
    if code is None:  # IAM's own shape: a numeric code
        return web.json_response(
            {"error": {"code": status, "message": message, "title": "Forbidden"}}, status=status
        )
    return gateway_error(status, code, message)


SERVICE = web.AppKey("simulator_service", SimulatorService)


def build_app(
    world: World, faults: FaultPlan | None = None, *, now: Callable[[], float] = time.time
) -> web.Application:
    """The simulator as an aiohttp application; ``app[SERVICE]`` reaches its state."""
    service = SimulatorService(world, faults, now)
    app = web.Application()
    app[SERVICE] = service
    app.on_shutdown.append(service.on_shutdown)
    ims = "/ims/{region}"
    add = app.router.add_route
    add("GET", ims + "/v2/cloudimages", service.list_images)
    add("GET", ims + "/v1/cloudimages/quota", service.show_quota)
    add("GET", ims + "/v1/cloudimages/job/{job_id}", service.show_job)
    add("POST", ims + "/v1/cloudimages/{image_id}/cross_region_copy", service.copy_image)
    add("GET", ims + "/v1/{project_id}/jobs/{job_id}", service.show_job)
    add("GET", "/iam/v3/projects", service.iam_projects)
    add("GET", "/_sim/health", service.health)
    add("GET", "/_sim/truth", service.truth)
    add("GET", "/_sim/requests", service.requests)
    add("GET", "/_sim/faults", service.get_faults)
    add("POST", "/_sim/faults", service.set_faults)
    add("POST", "/_sim/occupy", service.occupy)
    add("POST", "/_sim/fail_job", service.fail_job)
    add_after_copy_routes(app, service)
    add("POST", "/_sim/deny", service.deny)
    add("*", "/{tail:.*}", service.no_api)
    return app


async def serve(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; returns the runner (``await runner.cleanup()`` stops it) and port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


def write_port_file(path: str | os.PathLike[str], port: int) -> None:
    """Write ``port`` to ``path`` atomically (temp file in the same folder, then rename)."""
    write_atomic(Path(path), f"{port}\n", durable=True)


async def run_simulator(
    scenario: str | os.PathLike[str] | Mapping[str, Any],
    host: str = "127.0.0.1",
    port: int = 0,
    port_file: str | os.PathLike[str] | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve the scenario's world (a file, or the scenario itself) until cancelled; the bound
    port goes to ``port_file`` and to ``on_ready``."""
    if isinstance(scenario, Mapping):
        world, faults = build_world(scenario)
    else:
        world, faults = load_scenario(scenario)
    runner, bound = await serve(build_app(world, faults), host, port)
    try:
        if port_file is not None:
            write_port_file(port_file, bound)
        if on_ready is not None:
            on_ready(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
