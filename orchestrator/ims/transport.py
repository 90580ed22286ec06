"""The transport seam of the IMS client: one signed request out, one answer (or a failure) back.

The IMS client builds and signs each request itself (``calls.py``) and hands it to a
:class:`Transport`; it never sees aiohttp. The real transport, :class:`AiohttpTransport`,
translates aiohttp's exceptions here, at the boundary, into a :class:`TransportError` that says
how far the request got, which is all the client needs to classify it:

    TransportError
    ├── NOT_SENT     refused, DNS, proxy, TLS handshake: nothing left this machine
    ├── WITHHELD     its ``withhold`` check said so at the last moment: nothing left this machine
    ├── INVALID      the request cannot be sent at all (a malformed URL)
    └── MAYBE_SENT   timeout, reset, connection lost before the answer: the service may have it

A request may carry a ``withhold`` check (the copy POST: the run's stop), read at the last
moment before its first byte is written. aiohttp writes a request's headers together with the
first bytes of its body, from a task of its own, a loop turn after the request was handed over
(Python 3.11): a stop in that turn must still keep the request off the wire.

Tests swap the transport, not the code (``tests/mock_transport.py``, after httpx's
MockTransport).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import aiohttp
import aiohttp.abc
import aiohttp.payload
from yarl import URL

from orchestrator.config import Config
from orchestrator.core.cloud import CloudError, ErrorKind
from orchestrator.ims.proxy import Proxy, env_proxy
from orchestrator.ims.ratelimit import MAX_IN_FLIGHT_PER_HOST


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


@dataclass(frozen=True)
class HttpRequest:
    """A request as it goes on the wire: ``url`` is already percent-encoded and signed."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None
    withhold: Callable[[], bool] | None = None  # True: do not send (read last, before the wire)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """A header of the answer, whatever the case of its name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


class Transport(Protocol):
    async def send(self, request: HttpRequest) -> HttpResponse:
        """The answer to ``request`` (any status), or a :class:`TransportError`."""
        ...


@asynccontextmanager
async def open_session(
    config: Config, ca_bundle: str | None = None
) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP session for the clients: proxies from the environment, the CA bundle
    (``ca_bundle``: a tenant's site's, else ``[endpoints] ca_bundle``)."""
    ssl_option: ssl.SSLContext | bool = True
    bundle = ca_bundle or config.endpoints.ca_bundle
    if bundle:
        try:
            ssl_option = ssl.create_default_context(cafile=bundle)
        except OSError as exc:  # ssl.SSLError is an OSError too
            raise CloudError(
                ErrorKind.PERMANENT, f"cannot load the CA bundle {bundle!r} (ca_bundle): {exc}"
            ) from exc
    # The pool holds as many connections per host as the client lets requests go on the wire
    # at once (ratelimit.MAX_IN_FLIGHT_PER_HOST): a request never waits for a free connection
    # inside its timeout. No cap over all hosts: each host is bounded on its own.
    connector = aiohttp.TCPConnector(ssl=ssl_option, limit=0, limit_per_host=MAX_IN_FLIGHT_PER_HOST)
    timeout = aiohttp.ClientTimeout(total=config.timing.request_timeout)
    # Not trust_env: the transport applies the environment's proxy itself (env_proxy).
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=False
    ) as session:
        yield session


@asynccontextmanager
async def open_transport(
    config: Config, ca_bundle: str | None = None
) -> AsyncIterator[AiohttpTransport]:
    """The real transport over one session (see :func:`open_session`)."""
    async with open_session(config, ca_bundle) as session:
        yield AiohttpTransport(session, config.timing.request_timeout)


# origin -> its proxy, read from the environment once per process: the look-up walks every
# environment variable (thousands with a thousand tenants' keys) and reads ~/.netrc.
# The session does not ``trust_env``: aiohttp would then look the proxy up in a worker thread
# on every request (most of a request's CPU cost), add ``~/.netrc`` credentials that clash with
# the signed Authorization header, and drop an https:// proxy (see orchestrator/ims/proxy.py).
_PROXIES: dict[str, Proxy] = {}


class AiohttpTransport:
    """Requests over an aiohttp session, each within ``timeout`` seconds, never redirected."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float) -> None:
        self._session = session
        self._seconds = timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, request: HttpRequest) -> HttpResponse:
        url = URL(request.url, encoded=True)
        origin = f"{url.scheme}://{url.raw_authority}"
        proxy = _PROXIES.get(origin)
        if proxy is None:
            proxy = _PROXIES[origin] = env_proxy(URL(origin))
        body: bytes | _LastCheck | None = request.body
        if request.withhold is not None:
            if request.withhold():
                raise TransportError(Delivery.WITHHELD, WITHHELD_TEXT)
            if request.body is not None:
                body = _LastCheck(request.body, request.withhold)
        try:
            async with self._session.request(
                request.method,
                url,
                headers=dict(request.headers),
                data=body,
                timeout=self._timeout,
                allow_redirects=False,
                proxy=proxy[0],
                proxy_auth=proxy[1],
            ) as response:
                raw = await response.read()
                return HttpResponse(response.status, raw, response.headers)
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            if isinstance(body, _LastCheck) and body.withheld:  # its connection closed unwritten
                raise TransportError(Delivery.WITHHELD, WITHHELD_TEXT) from exc
            raise self._translate(exc) from exc

    def _translate(self, exc: Exception) -> TransportError:
        """aiohttp's exception as how far the request got, in words for the operator."""
        name = type(exc).__name__
        if isinstance(exc, aiohttp.ClientSSLError):
            return TransportError(
                Delivery.NOT_SENT,
                f"TLS handshake failed ({name}: {exc}); if the endpoint uses a private CA, "
                "set [endpoints] ca_bundle",
            )
        # Before the generic ClientOSError: ClientConnectorError (refused, DNS, proxy) is one.
        if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return TransportError(Delivery.NOT_SENT, f"not sent, cannot connect ({exc})")
        if isinstance(exc, aiohttp.InvalidURL):
            return TransportError(Delivery.INVALID, f"invalid URL ({exc})")
        if isinstance(exc, TimeoutError):
            return TransportError(
                Delivery.MAYBE_SENT, f"no answer within {self._seconds:g}s ({name})"
            )
        return TransportError(
            Delivery.MAYBE_SENT, f"connection lost before the answer ({name}: {exc})"
        )


WITHHELD_TEXT = "not sent: withheld right before the wire"


class _Withheld(Exception):
    """Raised by a body whose ``withhold`` check says so; aiohttp then closes the connection."""


class _LastCheck(aiohttp.payload.BytesPayload):
    """A request's body that reads the request's ``withhold`` check right before aiohttp
    writes it: the headers wait in aiohttp's buffer until the body's first bytes (the same
    bytes on the wire as a plain ``bytes`` body: aiohttp makes a ``BytesPayload`` of those).
    Withheld, it raises before anything is written, and aiohttp closes the connection, its
    headers unwritten."""

    def __init__(self, value: bytes, withhold: Callable[[], bool]) -> None:
        super().__init__(value)
        self._withhold = withhold
        self.withheld = False

    def _check(self) -> None:
        if self._withhold():
            self.withheld = True
            raise _Withheld(WITHHELD_TEXT)

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        self._check()
        await super().write(writer)

    async def write_with_length(
        self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None
    ) -> None:
        self._check()
        await super().write_with_length(writer, content_length)
