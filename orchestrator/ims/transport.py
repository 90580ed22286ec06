"""The transport seam of the IMS client: one signed request out, one answer (or a failure) back.

The IMS client builds and signs each request itself (``calls.py``) and hands it to a
:class:`Transport`; it never sees a socket. The real transport (``wire.py``: HTTP/1.1
connections of our own) says how far a failed request got with a :class:`TransportError`,
which is all the client needs to classify it:

    TransportError
    ├── NOT_SENT     refused, DNS, proxy, TLS handshake: nothing left this machine
    ├── WITHHELD     its ``withhold`` check said so at the last moment: nothing left this machine
    ├── INVALID      the request cannot be sent at all (a malformed URL)
    └── MAYBE_SENT   timeout, reset, connection lost before the answer: the service may have it

A request may carry a ``withhold`` check (the copy POST: the run's stop), read at the last
moment before its first byte is written: a stop that came while the request waited for a
connection must still keep it off the wire.

Tests swap the transport, not the code (``tests/mock_transport.py``, after httpx's
MockTransport).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from types import MappingProxyType
from typing import NamedTuple, Protocol


class Delivery(Enum):
    """How far a request got before it failed."""

    NOT_SENT = "not sent"
    WITHHELD = "withheld"  # not sent: its ``withhold`` check said so right before the wire
    INVALID = "invalid"
    MAYBE_SENT = "maybe sent"


class TransportError(Exception):
    """The request got no answer; ``delivery`` says whether the service may have received it."""

    def __init__(self, delivery: Delivery, message: str) -> None:
        super().__init__(message)
        self.delivery = delivery
        self.message = message


class HttpRequest(NamedTuple):
    """A request as it goes on the wire: ``url`` is already percent-encoded and signed.

    A named tuple, as :class:`HttpResponse`: one of each per request, and a frozen dataclass
    pays an ``object.__setattr__`` call per field to be made."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None
    withhold: Callable[[], bool] | None = None  # True: do not send (read last, before the wire)


class HttpResponse(NamedTuple):
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = MappingProxyType({})

    def header(self, name: str) -> str | None:
        """A header of the answer, whatever the case of its name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


class Transport(Protocol):
    async def send(self, request: HttpRequest) -> HttpResponse:
        """The answer to ``request`` (any status), or a :class:`TransportError`."""
        ...


WITHHELD_TEXT = "not sent: withheld right before the wire"
