"""The real transport: HTTP/1.1 keep-alive connections of our own, parsed by httptools.

Why not aiohttp's client: it costs ~150-200 us of CPU per request here (a request object,
a response object, cookie and redirect machinery, timers, a writer task) against ~30-50 us
for what the IMS client needs: a signed request out, its status, headers and body back. At
four or five requests per image that was a quarter of a run's CPU (``scripts/bench many``).
aiohttp stays the simulator's server.

What a request meets, in order (the classification the client needs, see ``transport.py``):

1. its route, once per origin: direct, or through the environment's proxy (``proxy.py``):
   an ``http://`` origin in absolute form with ``Proxy-Authorization``; an ``https://`` one
   through a ``CONNECT`` tunnel, then TLS with the origin. An origin that is not
   ``http(s)://host[:port]`` is INVALID;
2. an idle connection to that route (newest first; one idle for ``KEEPALIVE`` seconds or
   closed by the peer is dropped), else a new one within ``timeout`` seconds: refused, DNS,
   TLS handshake, the proxy's refusal, no connection in time: NOT_SENT;
3. its ``withhold`` check (the run's stop), right before the bytes are handed to the socket
   (same loop turn as the write): WITHHELD, and the connection is closed unwritten;
4. from the write, ``timeout`` seconds for the whole answer: no answer in time, the
   connection lost, a malformed answer: MAYBE_SENT (the connection is closed, never reused).
   A cancelled request closes its connection too.

A connection goes back to the pool only after a whole answer that lets it (``keep_alive``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
from yarl import URL

from orchestrator import __version__
from orchestrator.config import Config
from orchestrator.core.cloud import CloudError, ErrorKind
from orchestrator.ims.http1 import (
    HeaderInjection,
    Http1Connection,
    ProtocolFault,
    request_bytes,
)
from orchestrator.ims.proxy import env_proxy
from orchestrator.ims.transport import (
    WITHHELD_TEXT,
    Delivery,
    HttpRequest,
    HttpResponse,
    TransportError,
)

KEEPALIVE = 15.0  # seconds a connection may wait idle for the next request (aiohttp's default)
DEFAULT_HEADERS = f"User-Agent: ims-migrate/{__version__}\r\nAccept: */*\r\n"


@dataclass(frozen=True, slots=True)
class Route:
    """How requests to one origin travel: the first hop, and what crosses it."""

    where: str  # the origin, for the operator
    host: str  # the first hop: the origin, or the proxy
    port: int
    tls: ssl.SSLContext | None  # TLS with the first hop
    tunnel: str | None  # CONNECT to this ``host:port`` through the proxy, then TLS with it
    tunnel_host: str | None
    prefix: str  # before the path: "" (origin form), or the origin (absolute form, a proxy)
    extra: str  # header lines every request on this route carries
    proxy_authorization: str | None = None  # for CONNECT only (never inside the tunnel)


class _Expired(Exception):
    """The answer did not come within the timeout (set on the answer's future)."""


_TICK = 1e-3  # uvloop's clock moves by milliseconds


class _Deadlines:
    """The timeouts of the requests on the wire, on one timer of the loop rather than one per
    request: every request gets the same ``seconds`` from its write, so their deadlines come
    in the order of the writes, and the timer waits for the earliest one still unanswered.
    An entry is ``[deadline, future]``; the future is dropped (None) once the answer is in,
    so that a slow request at the head keeps no answers alive, only their small entries."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._queue: deque[list[Any]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(
        self, loop: asyncio.AbstractEventLoop, answer: asyncio.Future[HttpResponse]
    ) -> list[Any]:
        """Start ``answer``'s timeout now (its request was just written); its entry."""
        if loop is not self._loop:  # another event loop (tests): the old one's timer is gone
            self._queue.clear()
            self._loop, self._timer = loop, None
        entry: list[Any] = [loop.time() + self._seconds, answer]
        self._queue.append(entry)
        if self._timer is None:
            self._timer = loop.call_at(entry[0], self._expire)
        return entry

    def _expire(self) -> None:
        """The earliest deadline has come: expire every unanswered request whose deadline has
        passed, then wait for the next one's."""
        self._timer = None
        loop, queue = self._loop, self._queue
        if loop is None:
            return
        now = loop.time()
        while queue:
            deadline, answer = queue[0]
            if answer is None or answer.done():
                queue.popleft()
            elif deadline <= now:
                queue.popleft()
                answer.set_exception(_Expired())
            else:  # never early; and never again within the loop clock's tick (uvloop: 1 ms)
                self._timer = loop.call_at(max(deadline, now + _TICK), self._expire)
                return

    def done(self, entry: list[Any]) -> None:
        """``entry``'s request is over (answered, failed or cancelled): nothing to expire. The
        answered ones at the head go at once (answers come mostly in the order of the writes)."""
        entry[1] = None
        queue = self._queue
        while queue and queue[0][1] is None:
            queue.popleft()


class WireTransport:
    """Requests over HTTP/1.1 connections of our own, each answered within ``timeout``
    seconds of its write, never redirected (see the module's docstring)."""

    def __init__(
        self,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        *,
        keepalive: float = KEEPALIVE,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = timeout
        self._ssl = ssl_context or ssl.create_default_context()
        self._keepalive = keepalive
        self._now = now
        self._routes: dict[str, Route] = {}
        self._idle: dict[str, list[Http1Connection]] = {}
        self._deadlines = _Deadlines(timeout)

    async def send(self, request: HttpRequest) -> HttpResponse:
        url = request.url
        cut = url.find("/", url.find("//") + 2)
        origin, path = (url, "/") if cut < 0 else (url[:cut], url[cut:])
        route = self._routes.get(origin)
        if route is None:
            route = self._routes[origin] = self._route(origin)
        try:
            data = request_bytes(
                request.method, route.prefix + path, request.headers, request.body, route.extra
            )
        except HeaderInjection as exc:
            raise TransportError(Delivery.INVALID, f"invalid request ({exc})") from None
        conn = self._take(origin) or await self._connect(route)
        withhold = request.withhold
        if withhold is not None and withhold():  # the last moment: nothing written yet
            conn.close()
            raise TransportError(Delivery.WITHHELD, WITHHELD_TEXT)
        answer_of = conn.request(data)
        entry = self._deadlines.add(answer_of.get_loop(), answer_of)  # from the write
        try:
            answer = await answer_of
        except _Expired:
            conn.close()
            raise TransportError(
                Delivery.MAYBE_SENT, f"no answer within {self._seconds:g}s (TimeoutError)"
            ) from None
        except ConnectionError as exc:
            conn.close()
            raise TransportError(
                Delivery.MAYBE_SENT,
                f"connection lost before the answer ({type(exc).__name__}: {exc})",
            ) from exc
        except ProtocolFault as exc:
            conn.close()
            raise TransportError(Delivery.MAYBE_SENT, f"{exc} from {route.where}") from exc
        except BaseException:  # cancelled: the answer may still come, on a connection nobody reads
            conn.close()
            raise
        finally:
            self._deadlines.done(entry)
        if conn.keep_alive and not conn.closed:
            conn.idle_since = self._now()
            idle = self._idle.get(origin)
            if idle is None:
                idle = self._idle[origin] = []
            idle.append(conn)
        else:
            conn.close()
        return answer

    def close(self) -> None:
        """Close the idle connections (those in use close when their request ends)."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def _take(self, origin: str) -> Http1Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = self._now()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._keepalive:
                return conn
            conn.close()
        return None

    async def _connect(self, route: Route) -> Http1Connection:
        loop = asyncio.get_running_loop()
        conn: Http1Connection | None = None
        try:
            with anyio.fail_after(self._seconds):
                _, conn = await loop.create_connection(
                    Http1Connection,
                    route.host,
                    route.port,
                    ssl=route.tls,
                    server_hostname=route.host if route.tls is not None else None,
                )
                if route.tunnel is not None:
                    await conn.tunnel(route.tunnel, route.proxy_authorization)
                    await conn.start_tls(self._ssl, route.tunnel_host)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, ssl.SSLError | ssl.CertificateError):
                raise TransportError(
                    Delivery.NOT_SENT,
                    f"TLS handshake failed ({type(exc).__name__}: {exc}); if the endpoint "
                    "uses a private CA, set [endpoints] ca_bundle",
                ) from exc
            if isinstance(exc, TimeoutError):
                raise TransportError(
                    Delivery.NOT_SENT,
                    f"not sent, cannot connect to {route.where} "
                    f"(no connection within {self._seconds:g}s)",
                ) from exc
            if isinstance(exc, OSError | ProtocolFault):
                raise TransportError(
                    Delivery.NOT_SENT, f"not sent, cannot connect to {route.where} ({exc})"
                ) from exc
            raise
        return conn

    def _route(self, origin: str) -> Route:
        try:
            split = urlsplit(origin)
            host, port = split.hostname, split.port
        except ValueError as exc:
            raise TransportError(Delivery.INVALID, f"invalid URL {origin!r} ({exc})") from None
        if split.scheme not in ("http", "https") or not host or split.username is not None:
            raise TransportError(
                Delivery.INVALID, f"invalid URL {origin!r} (expected http(s)://host[:port])"
            )
        secure = split.scheme == "https"
        port = port or (443 if secure else 80)
        proxy, auth = env_proxy(URL(origin))
        if proxy is None or proxy.host is None:
            return Route(
                origin, host, port, self._ssl if secure else None, None, None, "", DEFAULT_HEADERS
            )
        proxy_tls = self._ssl if proxy.scheme == "https" else None
        proxy_port = proxy.port or (443 if proxy.scheme == "https" else 80)
        if secure:  # a tunnel: the proxy sees where to, never the request (nor its key)
            return Route(
                origin,
                proxy.host,
                proxy_port,
                proxy_tls,
                f"{_authority(host)}:{port}",
                host,
                "",
                DEFAULT_HEADERS,
                auth,
            )
        extra = DEFAULT_HEADERS
        if auth is not None:
            extra += f"Proxy-Authorization: {auth}\r\n"
        return Route(origin, proxy.host, proxy_port, proxy_tls, None, None, origin, extra)


def _authority(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def ssl_context(config: Config, ca_bundle: str | None = None) -> ssl.SSLContext:
    """The TLS settings: the system's CAs, or the CA bundle (``ca_bundle``: a tenant's
    site's, else ``[endpoints] ca_bundle``)."""
    bundle = ca_bundle or config.endpoints.ca_bundle
    try:
        return ssl.create_default_context(cafile=bundle or None)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise CloudError(
            ErrorKind.PERMANENT, f"cannot load the CA bundle {bundle!r} (ca_bundle): {exc}"
        ) from exc


@asynccontextmanager
async def open_transport(
    config: Config, ca_bundle: str | None = None
) -> AsyncIterator[WireTransport]:
    """The real transport, its connections closed at the end."""
    transport = WireTransport(config.timing.request_timeout, ssl_context(config, ca_bundle))
    try:
        yield transport
    finally:
        transport.close()
