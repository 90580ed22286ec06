"""The simulator's world behind the real client's transport seam: ``ImsClient`` signs, budgets
and classifies as in production, and every request is answered by the world on the virtual
clock, after ``latency`` seconds (a slow but healthy cloud). Only what a run calls is routed:
the IAM project lookup, the image listing, the copy, the job, and the reads after a copy
(members, tags)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from yarl import URL

from orchestrator.ims.signer import parse_authorization
from orchestrator.ims.transport import HttpRequest, HttpResponse
from orchestrator.simulator.images import SimError
from orchestrator.simulator.inmemory import THROTTLE_MESSAGE
from orchestrator.simulator.throttle import KeyRateGate
from orchestrator.simulator.world import World
from tests.mock_transport import json_response
from tests.virtual_clock import VirtualClock

IMS = "https://ims.{region}.sim.test"
IAM = "https://iam.sim.test"
ONE_HOST_IMS = "https://sim.test/ims/{region}"  # every region behind one host (a proxy, a bench)


class WorldTransport:
    def __init__(
        self, world: World, clock: VirtualClock, latency: float, gate: KeyRateGate | None = None
    ) -> None:
        self.world = world
        self.clock = clock
        self.latency = latency
        self.gate = gate or world.gate
        self.sent = 0

    async def send(self, request: HttpRequest) -> HttpResponse:
        self.sent += 1
        url = URL(request.url, encoded=True)
        parsed = parse_authorization(request.headers.get("Authorization", ""))
        account = self.world.account_by_access_key(parsed.access_key) if parsed else None
        assert account is not None
        host = url.host or ""
        retry_after = self.gate.admit(account.access_key, host, self.clock.now())
        await self.clock.sleep(self.latency)
        now = self.clock.now()
        if retry_after is not None:
            body = {"error_code": "APIGW.0308", "error_msg": THROTTLE_MESSAGE}
            return json_response(429, body, {"Retry-After": f"{retry_after:.3f}"})
        kind = "iam"
        result: Mapping[str, Any]
        try:
            if host.startswith("iam."):
                name = url.query.get("name")
                found = [p for p in account.projects.get(name or "", []) if p.name == name]
                result = {
                    "projects": [
                        {"id": p.id, "name": p.name, "domain_id": account.domain_id} for p in found
                    ]
                }
            elif host.startswith("ims."):
                kind, result = self._ims(account.name, host.split(".")[1], url.path, request, now)
            else:  # ONE_HOST_IMS: /ims/{region}/...
                _, _, region, path = url.path.split("/", 3)
                kind, result = self._ims(account.name, region, "/" + path, request, now)
        except SimError as error:
            self.world.record_request(now, request.method, kind, account.name, error.status)
            return json_response(
                error.status, {"error": {"code": error.code, "message": error.message}}
            )
        self.world.record_request(now, request.method, kind, account.name, 200)
        return json_response(200, result)

    def _ims(
        self, account: str, region: str, path: str, request: HttpRequest, now: float
    ) -> tuple[str, Mapping[str, Any]]:
        project_id = request.headers.get("X-Project-Id")
        url = URL(request.url, encoded=True)
        if path == "/v2/cloudimages":
            images = self.world.list_images(
                account,
                region,
                now=now,
                project_id=project_id,
                filters=dict(url.query),
                limit=int(url.query.get("limit", "500")),
                marker=url.query.get("marker") or None,
            )
            return "list", {"images": images}
        if path.endswith("/cross_region_copy"):
            image_id = path.split("/")[3]
            payload = json.loads(request.body or b"{}")
            job_id = self.world.copy(account, region, image_id, payload, now, project_id=project_id)
            return "copy", {"job_id": job_id}
        if path.startswith("/v1/cloudimages/job/"):
            return "job", self.world.job(account, region, path.rsplit("/", 1)[1], now)
        parts = path.split("/")  # /v1/{pid}/cloudimages/{id}/members, /v2/{pid}/images/{id}/tags
        if request.method == "GET" and len(parts) == 6 and parts[5] == "members":
            return "members", self.world.image_members(account, region, parts[4], now, parts[2])
        if request.method == "GET" and len(parts) == 6 and parts[5] == "tags":
            return "tags", self.world.image_tags(account, region, parts[4], now, parts[2])
        raise SimError(404, "APIGW.0101", f"no route for {path}")
