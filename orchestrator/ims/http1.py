"""HTTP/1.1 on one connection: a request's bytes out, its answer parsed as it arrives.

The parsing is httptools' (llhttp, the parser of Node.js, in C): status line, headers, bodies
framed by ``Content-Length``, chunked or ended by the close, interim 1xx answers. What is
ours: one request at a time on a connection, how its answer is handed back, and the words for
what went wrong. A connection is kept for the next request when both sides allow it
(``keep_alive``); the transport (``wire.py``) owns the pool.

Used by :class:`orchestrator.ims.wire.WireTransport` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import httptools

from orchestrator.ims.transport import HttpResponse


class Wire(Protocol):
    """What a connection needs of its transport (asyncio's, or uvloop's: not an
    ``asyncio.Transport`` subclass, hence a protocol)."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class ProtocolFault(Exception):
    """The peer broke HTTP/1.1 (a malformed answer, bytes nobody asked for)."""


class HeaderInjection(ValueError):
    """A header name or value that would end the header early (CR, LF) or is not a token."""


class Headers(Mapping[str, str]):
    """An answer's headers, read from the bytes as they came only when asked for (a success
    is read by its status and body alone): the names as the peer spelled them, latin-1, a
    repeated one's values joined by ", ".

    What is kept is the answer's bytes up to the end of its head (any interim answer before
    it, maybe some of its body after it), parsed again by httptools when a header is asked
    for: the parse of an answer then calls no Python code per header."""

    __slots__ = ("_head", "_read")

    def __init__(self, head: list[bytes]) -> None:
        self._head = head
        self._read: dict[str, str] | None = None

    def _all(self) -> dict[str, str]:
        read = self._read
        if read is None:
            read = self._read = {}
            for name, value in _head_fields(b"".join(self._head)):
                key = name.decode("latin-1")
                text = value.decode("latin-1")
                before = read.get(key)
                read[key] = text if before is None else f"{before}, {text}"
            self._head = []
        return read

    def __getitem__(self, name: str) -> str:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return f"Headers({self._all()!r})"


class _HeadFields:
    """The header fields of the final answer (status 200 and up) in an answer's bytes."""

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        self.done = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_message_begin(self) -> None:
        if not self.done:
            self.fields = []  # an interim answer's own are not the answer's

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.done:
            self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        if self.parser is not None and self.parser.get_status_code() >= 200:
            self.done = True


def _head_fields(data: bytes) -> list[tuple[bytes, bytes]]:
    """The final answer's header fields in ``data`` (bytes the connection's parser read
    without a fault up to that answer's head, and maybe more after it)."""
    reader = _HeadFields()
    parser = reader.parser = httptools.HttpResponseParser(reader)
    with contextlib.suppress(httptools.HttpParserError):  # after the head: not ours to judge
        parser.feed_data(data)
    return reader.fields


def request_bytes(
    method: str, target: str, headers: Mapping[str, str], body: bytes | None, extra: str = ""
) -> bytes:
    """The request as it goes on the wire: request line, ``headers`` as given (in their order,
    exactly the values that were signed), ``extra`` (whole header lines of the transport's:
    ``User-Agent``, a proxy's credentials), ``Content-Length`` when there is a body, the body.

    Raises :class:`HeaderInjection` for a CR or LF in a value (it would start a header of its
    own), a header name that is not an HTTP token, or whitespace in the target."""
    if not target or " " in target or "\r" in target or "\n" in target:
        raise HeaderInjection(f"request target {target!r}: empty or with whitespace")
    if not _TOKENS_SEEN.issuperset(headers):  # a name not seen yet (the client has a few)
        for name in headers:
            if not name or not _TOKEN.issuperset(name):
                raise HeaderInjection(f"header name {name!r} is not an HTTP token")
        if len(_TOKENS_SEEN) < 256:
            _TOKENS_SEEN.update(headers)
    # A CR or LF only ends a line (a token holds neither): looked for in the values at once,
    # then the lines joined in C, a str.join per header (no frame or formatting of ours).
    values = "".join(headers.values())
    if "\r" in values or "\n" in values:
        name = next(n for n, v in headers.items() if "\r" in v or "\n" in v)
        raise HeaderInjection(f"header {name}: a CR or LF in its value")
    lines = "\r\n".join(map(": ".join, headers.items())) + "\r\n" if headers else ""
    if body is not None or method in _BODY_METHODS:  # an empty POST says so (no 411)
        length = f"Content-Length: {len(body) if body else 0}\r\n"
    else:
        length = ""
    try:
        raw = f"{method} {target} HTTP/1.1\r\n{lines}{extra}{length}\r\n".encode("latin-1")
    except UnicodeEncodeError as exc:
        raise HeaderInjection(f"a character HTTP/1.1 headers cannot carry ({exc})") from None
    return raw + body if body else raw


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKENS_SEEN: set[str] = set()  # header names found to be tokens
_NO_BODY = frozenset((204, 304))
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))
_new_tuple = tuple.__new__


class Http1Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time: :meth:`request` writes the bytes and
    returns the future of their answer, an :class:`~orchestrator.ims.transport.HttpResponse`
    (its headers: :class:`Headers`, as the peer spelled the names, repeated ones joined by
    ", "); :attr:`keep_alive` then says whether the connection may carry the next request.
    The future fails with
    :class:`ConnectionError` when the connection is lost before the answer is whole, with
    :class:`ProtocolFault` for a malformed one."""

    def __init__(self) -> None:
        self.transport: Wire | None = None
        self._stream: Any = None  # the same transport, as asyncio/uvloop typed it (start_tls)
        self.closed = False
        self.idle_since = 0.0  # the transport's clock, when it was put back in the pool
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self.keep_alive = False  # the last answer lets the connection carry the next request
        self._parser: httptools.HttpResponseParser | None = None
        self._head: list[bytes] = []  # the answer's bytes as they came, up to its head
        self._body: list[bytes] = []
        self._status = 0
        self._head_done = False
        self._reply: bytearray | None = None  # a proxy's answer to CONNECT, read by hand
        self._reply_waiter: asyncio.Future[int] | None = None
        # The event loop the connection was made on, the one its answers come on (taken once:
        # asyncio.get_running_loop() is a getpid() system call on Python 3.11).
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # a stream transport: a Wire
        self.transport = transport
        self._stream = transport
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        if self._reply is not None:
            self._tunnel_reply(data)
            return
        parser = self._parser
        if parser is None:  # an answer nobody asked for: this connection cannot be trusted
            self._fail(ProtocolFault("the server sent data with no request outstanding"))
            return
        if not self._head_done:  # its headers are read from these if asked for (Headers)
            self._head.append(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolFault(f"a malformed answer ({exc})"))

    def eof_received(self) -> bool:
        return False  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._parser = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._head_done and exc is None and self._until_close():
                self._finish(keep_alive=False)
            else:
                lost = ConnectionResetError("the connection closed before the whole answer")
                waiter.set_exception(exc if isinstance(exc, ConnectionError) else lost)
        reply = self._reply_waiter
        if reply is not None and not reply.done():
            reply.set_exception(ConnectionResetError("the proxy closed the connection"))

    # -- httptools callbacks -----------------------------------------------------------------

    def on_headers_complete(self) -> None:
        parser = self._parser
        if parser is None:
            return
        self._status = parser.get_status_code()
        self._head_done = True

    def _until_close(self) -> bool:
        """No length, not chunked: the body ends with the connection (asked when it ends)."""
        status = self._status
        if status < 200 or status in _NO_BODY:
            return False
        lowered = {name.lower() for name in Headers(self._head)}
        return "content-length" not in lowered and "transfer-encoding" not in lowered

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        if parser is None:
            return
        if (
            parser.get_status_code() < 200
        ):  # an interim answer (100 Continue, 103): the real one follows
            self._body = []
            self._head_done = False
            return
        self._finish(keep_alive=parser.should_keep_alive())

    # -- ours ------------------------------------------------------------------------------

    def request(self, data: bytes) -> asyncio.Future[HttpResponse]:
        """Write ``data`` (one whole request) now; the future of its answer."""
        loop = self.loop
        if self.transport is None or self._waiter is not None or loop is None:
            raise ConnectionResetError("the connection is not ready for a request")
        waiter = self._waiter = loop.create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._head = []
        self._body = []
        self._head_done = False
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def tunnel(self, authority: str, proxy_authorization: str | None) -> None:
        """``CONNECT authority`` through the proxy at the other end; returns once the proxy
        answered 2xx (then the bytes go to ``authority``), else raises ProtocolFault."""
        if self.transport is None:
            raise ConnectionResetError("not connected to the proxy")
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if proxy_authorization is not None:
            head += f"Proxy-Authorization: {proxy_authorization}\r\n"
        self._reply = bytearray()
        self._reply_waiter = asyncio.get_running_loop().create_future()
        self.transport.write((head + "\r\n").encode("latin-1"))
        try:
            status = await self._reply_waiter
        finally:
            self._reply = None
            self._reply_waiter = None
        if not 200 <= status < 300:
            raise ProtocolFault(f"the proxy refused the tunnel to {authority} (HTTP {status})")

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        """TLS with the far end of the tunnel, over this connection."""
        loop = asyncio.get_running_loop()
        tls = await loop.start_tls(self._stream, self, context, server_hostname=server_hostname)
        if tls is None:
            raise ConnectionResetError("the tunnel closed during the TLS handshake")
        self.transport = self._stream = tls

    def _tunnel_reply(self, data: bytes) -> None:
        reply, waiter = self._reply, self._reply_waiter
        if reply is None or waiter is None or waiter.done():
            return
        reply += data
        end = reply.find(b"\r\n\r\n")
        if end < 0:
            if len(reply) > 65536:
                waiter.set_exception(ProtocolFault("the proxy's answer never ended"))
            return
        if end + 4 != len(reply):  # bytes after the proxy's answer: not ours to read
            waiter.set_exception(ProtocolFault("the proxy sent more than its answer"))
            return
        line = bytes(reply[: reply.find(b"\r\n")]).split(b" ", 2)
        if len(line) < 2 or not line[0].startswith(b"HTTP/1.") or not line[1].isdigit():
            waiter.set_exception(ProtocolFault("the proxy's answer is not HTTP/1.x"))
            return
        waiter.set_result(int(line[1]))

    def _finish(self, *, keep_alive: bool) -> None:
        waiter = self._waiter
        self._parser = None
        self._waiter = None
        if waiter is not None and not waiter.done():
            head, self._head = self._head, []  # the answer's own, whatever comes after
            body = b"".join(self._body)
            self.keep_alive = keep_alive
            # HttpResponse(...) without the named tuple's __new__, a Python frame.
            waiter.set_result(_new_tuple(HttpResponse, (self._status, body, Headers(head))))

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        self._waiter = None
        self._parser = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()
