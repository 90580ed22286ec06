"""The simulator's HTTP routes for the calls after a copy (orchestrator/simulator/imageops.py).

    GET    /ims/{region}/v2/{project_id}/images/{image_id}/tags          tags
    POST   /ims/{region}/v2/{project_id}/images/{image_id}/tags/action   tag     (204)
    PATCH  /ims/{region}/v2/cloudimages/{image_id}                       patch   (the image)
    GET    /ims/{region}/v1/{project_id}/cloudimages/{image_id}/members  members
    DELETE /ims/{region}/v2/images/{image_id}                            delete  (204)
    GET    /_sim/images                 every stored image by region (admin, never signed)

Signed, faulted and recorded like every IMS call (``SimulatorService.serve``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from orchestrator.simulator.accounts import Account
from orchestrator.simulator.images import SimError

if TYPE_CHECKING:
    from orchestrator.simulator.app import Op, SimulatorService

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: bytes) -> object:
    if not body.strip():
        raise SimError(400, "IMG.0007", "The request body is empty.")
    try:
        return json.loads(body)
    except ValueError:
        raise SimError(400, "IMG.0001", "The request message format is invalid.") from None


def add_after_copy_routes(app: web.Application, service: SimulatorService) -> None:
    """The routes of the module's docstring (before the application's catch-all)."""
    world = service.world

    def route(kind: str, op: Op) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await service.serve(request, kind, op)

        return handle

    def where(service_op: Callable[..., Any]) -> Op:
        def op(account: Account, request: web.Request, body: bytes, now: float) -> Any:
            project = service.project(account, request)
            image_id = request.match_info["image_id"]
            args: list[Any] = [account.name, project.region, image_id]
            if request.method in ("POST", "PATCH"):
                args.append(_json(body))
            return service_op(*args, now, project.id)

        return op

    ims = "/ims/{region}"
    add = app.router.add_route
    add(
        "GET",
        ims + "/v2/{project_id}/images/{image_id}/tags",
        route("tags", where(world.image_tags)),
    )
    add(
        "POST",
        ims + "/v2/{project_id}/images/{image_id}/tags/action",
        route("tag", where(world.tag_action)),
    )
    add("PATCH", ims + "/v2/cloudimages/{image_id}", route("patch", where(world.patch_image)))
    add(
        "GET",
        ims + "/v1/{project_id}/cloudimages/{image_id}/members",
        route("members", where(world.image_members)),
    )
    add("DELETE", ims + "/v2/images/{image_id}", route("delete", where(world.delete_image)))

    async def images(_request: web.Request) -> web.StreamResponse:
        stored = {region: list(found.values()) for region, found in world.images.items()}
        return web.json_response({"images": stored})

    add("GET", "/_sim/images", images)
