"""A whole fake network in a few lines, after httpx's ``MockTransport``: tests swap the
transport, not the code. The handler answers each request the client would have sent."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio.lowlevel

from orchestrator.ims.transport import HttpRequest, HttpResponse

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class MockTransport:
    """A :class:`~orchestrator.ims.transport.Transport` that hands every request to
    ``handler`` (which may also raise a ``TransportError``) and keeps what was sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sent: list[HttpRequest] = []

    async def send(self, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        await anyio.lowlevel.checkpoint()  # a real send always yields to the event loop
        return await self.handler(request)


def json_response(
    status: int = 200, body: Any = None, headers: Mapping[str, str] | None = None
) -> HttpResponse:
    """An answer with a JSON body, as the gateway and IMS give them."""
    data = json.dumps(body if body is not None else {}).encode()
    return HttpResponse(
        status, data, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    )
