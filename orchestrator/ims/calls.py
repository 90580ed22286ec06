"""One tenant's signed JSON calls: attempts with back-off, each failure classified.

An attempt waits for its access key's budget at the host and for a connection slot, is signed
(``SDK-HMAC-SHA256``) over exactly the path, query and body bytes it sends, and handed to the
:class:`~orchestrator.ims.transport.Transport`. Its failure is classified here into a
:class:`CloudError`:

    not sent (refused, DNS, TLS handshake)      -> NOT_SENT   (retried: nothing left this machine)
    maybe sent (timeout, reset, lost) on a GET  -> TRANSIENT  (retried)
    maybe sent on the POST                      -> UNKNOWN    (raised at once: never re-POST)
    an HTTP error answer                        -> errors.classify (429 retried, AUTH never)

Reads and the copy POST share one retry loop that retries only NOT_SENT and TRANSIENT (a
plain loop: a retry library's machinery cost a third of a call's own CPU); for the POST the only
TRANSIENT answer is a gateway refusal (429 / ``APIGW.0308``), which the service never saw.

Only the wire counts: the budget, the connection slot and the back-off between attempts are
waited for *before* the request is handed to the transport, whose timeout starts there. A POST
still waiting when the engine's ``SEND_STOP`` flag is set is not sent: ``NOT_SENT``, never unknown;
the transport reads the flag once more right before the first byte goes out (``withhold``).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from json.scanner import make_scanner
from typing import Any, NamedTuple, TypeVar, cast
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import orjson
import structlog

from orchestrator.clock import Clock
from orchestrator.core.cloud import SEND_STOP, STOPPED, CloudError, ErrorKind, StopFlag
from orchestrator.core.credentials import Credentials
from orchestrator.core.exactjson import orjson_exact
from orchestrator.ims.errors import THROTTLE_CODES, classify, parse_error_body
from orchestrator.ims.ratelimit import READ, SUBMIT, RateLimits, Slots, TokenBucket
from orchestrator.ims.scopes import cancel_pending
from orchestrator.ims.signer import (
    DATE_FORMAT,
    Shape,
    canonical_query,
    shape_of,
    sign,
    sign_shaped,
)
from orchestrator.ims.transport import (
    Delivery,
    HttpRequest,
    HttpResponse,
    Transport,
    TransportError,
)

log = structlog.get_logger(__name__)

JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
PROJECT_HEADER = "X-Project-Id"
MAX_ATTEMPTS = 6
BACKOFF_BASE = 0.5
RETRYABLE = frozenset({ErrorKind.NOT_SENT, ErrorKind.TRANSIENT})

T = TypeVar("T")
_new_tuple = tuple.__new__
Params = Sequence[tuple[str, str]]


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, CloudError) and exc.kind in RETRYABLE and exc.code != STOPPED


class Backoff:
    """Full-jitter exponential backoff, capped, and never shorter than the server's Retry-After."""

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self._base = base
        self._cap = cap
        self._rng = rng

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first)."""
        exponent = min(attempt - 1, 32)
        delay = self._rng.uniform(0.0, min(self._cap, self._base * 2**exponent))
        if isinstance(error, CloudError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay


class SignedCalls:
    """Signed calls of one access key pair over a transport, retried as the kind allows."""

    def __init__(
        self,
        transport: Transport,
        credentials: Credentials,
        limits: RateLimits,
        clock: Clock,
        backoff: Backoff,
        *,
        retry_sleep: Callable[[float], Awaitable[None]] | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self._transport = transport
        self._credentials = credentials
        self._limits = limits
        self._clock = clock
        self._backoff = backoff
        self._retry_sleep = retry_sleep or clock.sleep
        self._max_attempts = max(1, max_attempts)
        self._date_second: int | None = None
        self._date = ""
        self._date_from = self._date_until = 0.0
        self._bases: dict[str, _Base] = {}
        self._headers_of: dict[tuple[str, str | None, bool], _Headers] = {}
        self._routes: dict[tuple[str, str | None, bool], _Route] = {}

    async def call(
        self,
        method: str,
        base: str,
        path: str,
        *,
        params: Params = (),
        body: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        project_id: str | None = None,
        priority: float | None = None,
    ) -> dict[str, Any]:
        """One logical call: attempts until success, a final error, or the attempt budget.

        ``priority`` orders the waiters of the key's budget and of a connection slot (lowest
        first; unnamed: a read goes as ``READ``, a write as early as the copy POST). A mutating
        call made under ``SEND_STOP`` that is still waiting (budget, connection slot, back-off)
        when the flag is set ends with ``NOT_SENT`` (``STOPPED``)."""
        mutating = method != "GET"
        stop: StopFlag | None = SEND_STOP.get() if mutating else None
        if priority is None:
            priority = SUBMIT if mutating else READ
        ident = (base, project_id, body is not None)
        route = self._routes.get(ident) or self._route(ident)
        origin, host, base_path, budget, slots, headers, shape = route
        full_path = base_path + path
        query = canonical_query(params) if params else ""
        url = f"{origin}{full_path}?{query}" if query else origin + full_path
        payload = b"" if body is None else json.dumps(body).encode()

        # One coroutine for the attempts and each attempt's steps (the success path is most
        # of a run's requests: no frame of its own per attempt).
        attempt = 1
        while True:
            try:
                # Before the timed part: the key's budget, then a connection slot (never a
                # pool wait inside the transport's timeout). A stop while waiting: nothing was
                # sent. Both are taken at once when free (no task, no trip through the loop);
                # the stop is checked last, after the last of them, right before sending.
                if budget is not None and budget.try_acquire():
                    if cancel_pending():  # a cancelled task sends nothing
                        await anyio.lowlevel.checkpoint_if_cancelled()
                else:
                    await self._admit(stop, budget, host, priority)
                if not slots.take():
                    await self._slot(stop, slots, priority)
                elif stop is not None and stop.is_set():
                    slots.release()
                    raise _stopped()
                try:
                    date = self._sdk_date()
                    credentials = self._credentials
                    signed = (
                        sign(credentials, method, host, full_path, query, headers, payload, date)
                        if shape is None
                        else sign_shaped(
                            shape, credentials, method, full_path, query, payload, date
                        )
                    )
                    # HttpRequest(...) as tuple.__new__ makes it, without the named tuple's
                    # own __new__ (a Python frame; every field is given here).
                    request: HttpRequest = _new_tuple(
                        HttpRequest,
                        (
                            method,
                            url,
                            signed,
                            payload if body is not None else None,
                            None if stop is None else stop.is_set,  # read right before the wire
                        ),
                    )
                    try:
                        response = await self._transport.send(request)
                    except TransportError as exc:
                        where = f"{method} {host}{full_path}"
                        raise _not_answered(exc, mutating, where) from exc
                finally:
                    slots.release()
                # A success's object, read here (the rest: _answer).
                if response.status < 300 and (answer := _json_object(response.body)) is not None:
                    return answer
                return self._answer(response, method, host, full_path)
            except CloudError as error:
                wait = self._retry_wait(error, attempt, method, path)
                await self.unless(stop, self._retry_sleep, wait)
            attempt += 1

    async def _admit(
        self, stop: StopFlag | None, budget: TokenBucket | None, host: str, priority: float
    ) -> None:
        """Wait for the key's budget at ``host`` (and the host's cap if one is set), unless
        ``stop`` is set first."""
        if budget is not None and stop is None:
            await budget.acquire(priority)  # what admit waits for when no host cap is set
        else:
            access_key = self._credentials.access_key
            await self.unless(stop, self._limits.admit, access_key, host, priority)

    async def _slot(self, stop: StopFlag | None, slots: Slots, priority: float) -> None:
        """Wait for a connection slot, unless ``stop`` is set first."""
        if stop is None:
            await slots.acquire(priority)
        else:
            await self.unless(stop, slots.acquire, priority, undo=slots.release)

    def _route(self, ident: tuple[str, str | None, bool]) -> _Route:
        """What a request to a base as a project, with a body or without, takes from them
        (its base's split, its headers and their shape): made once, then found by one
        look-up in :meth:`call`."""
        base, project_id, body = ident
        split = self._split(base)
        headers, shape = self._headers(split.host, project_id, body)
        route = self._routes[ident] = _Route(*split, headers, shape)
        return route

    def _headers(self, host: str, project_id: str | None, body: bool) -> _Headers:
        """The headers a request signs and sends (its project's, the JSON type if it has a
        body), and their signature's shape: made once per host, project and kind, then
        found by one look-up (the same headers, never changed: the signer copies them)."""
        ident = (host, project_id, body)
        found = self._headers_of.get(ident)
        if found is None:
            headers = {"Content-Type": JSON_CONTENT_TYPE} if body else {}
            if project_id is not None:
                headers[PROJECT_HEADER] = project_id
            found = _Headers(headers, shape_of(self._credentials, host, headers))
            self._headers_of[ident] = found
        return found

    def _answer(self, response: HttpResponse, method: str, host: str, path: str) -> dict[str, Any]:
        """The JSON object of a success, or the classified error of any other answer."""
        if response.status >= 300:
            raise self._refusal(response, method, host, path)
        answer = _json_object(response.body)
        if answer is None:
            raise _not_json(f"{method} {host}{path}", response.status, mutating=method != "GET")
        return answer

    def _retry_wait(self, error: CloudError, attempt: int, method: str, path: str) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after ``error``; ``error`` itself
        if it is final or the attempts are spent."""
        if not _retryable(error) or attempt >= self._max_attempts:
            raise error
        wait = self._backoff.delay(attempt, error)
        log.info(
            "ims.retry",
            method=method,
            path=path,
            attempt=attempt,
            wait=round(wait, 3),
            error=str(error),
            kind=error.kind.value,
        )
        return wait

    async def unless(
        self,
        stop: StopFlag | None,
        wait: Callable[..., Awaitable[T]],
        *args: Any,
        undo: Callable[[], object] | None = None,
    ) -> T:
        """``await wait(*args)``, unless ``stop`` is set first: then ``NOT_SENT`` with the code
        ``STOPPED`` (and ``undo`` if the wait was over all the same). The wait runs inside the
        flag's ``withdrawing()`` scope, which the flag cancels when it is set (no watcher task)."""
        if stop is None:
            return await wait(*args)
        result: list[T] = []
        with stop.withdrawing():
            result.append(await wait(*args))
        if not result or stop.is_set():
            if result and undo is not None:
                undo()
            raise _stopped()
        return result[0]

    def _split(self, base: str) -> _Base:
        """What a base URL gives every request to it (a few bases per client: each split once,
        its host's budget of this key and its connection slots found once)."""
        found = self._bases.get(base)
        if found is None:
            split = urlsplit(base)
            host = split.netloc.rpartition("@")[2]
            limits = self._limits
            found = self._bases[base] = _Base(
                f"{split.scheme}://{host}",
                host,
                split.path,
                None if limits.host_capped else limits.for_key(self._credentials.access_key, host),
                limits.slots(host),
            )
        return found

    def _refusal(self, response: HttpResponse, method: str, host: str, path: str) -> CloudError:
        """The classified error of an answer that is not a success (a throttling refusal
        pauses every request of this key to this host, not only this one)."""
        code, message, request_id = parse_error_body(response.body)
        retry_after = self._retry_after(response.header("Retry-After"))
        error = classify(
            response.status,
            code,
            message,
            mutating=method != "GET",
            retry_after=retry_after,
            request_id=request_id or response.header("X-Request-Id"),
        )
        if _refused(response.status, code, retry_after):
            # Every request of this key to this host waits, not only this one.
            self._limits.for_key(self._credentials.access_key, host).refused(retry_after)
        return error

    def _retry_after(self, value: str | None) -> float | None:
        """``Retry-After`` in seconds: a number, or an HTTP date relative to the clock."""
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:  # "inf" or "1e999" would pause the key for ever, "nan" not at all: the default
            return max(0.0, seconds) if math.isfinite(seconds) else None
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, moment.timestamp() - self._clock.now())

    def _sdk_date(self) -> str:
        """``X-Sdk-Date`` now: formatted once per second of the clock (as ``fromtimestamp``
        rounds it to the microsecond); within that second, one comparison."""
        now = self._clock.now()
        if self._date_from <= now < self._date_until:
            return self._date
        frac, whole = math.modf(now)
        second = int(whole) + (round(frac * 1e6) >= 1_000_000)
        if second != self._date_second:
            self._date = _DATES.get(second) or _format_date(second, now)
            self._date_second = second
            # The moments that certainly round into this second (a margin of a microsecond
            # on each side: those near the edges take the exact path above).
            self._date_from, self._date_until = second + 1e-6, second + 1 - 1e-6
        return self._date


# second -> its X-Sdk-Date, shared by every tenant's calls (each one's own cache holds one
# second: with hundreds of tenants, most would format the same second again).
_DATES: dict[int, str] = {}


def _format_date(second: int, now: float) -> str:
    """``X-Sdk-Date`` of ``now``, the clock's moment in that second, kept for the others."""
    text = datetime.fromtimestamp(now, tz=UTC).strftime(DATE_FORMAT)
    if len(_DATES) >= 64:  # a few seconds are asked for at once (virtual clocks: any)
        _DATES.clear()
    _DATES[second] = text
    return text


def _stopped() -> CloudError:
    return CloudError(ErrorKind.NOT_SENT, "not sent: the run is stopping", code=STOPPED)


def _refused(status: int, code: str | None, retry_after: float | None) -> bool:
    """A throttling refusal: 429 / ``APIGW.0308``, or a 503 that names a Retry-After."""
    return status == 429 or code in THROTTLE_CODES or (status == 503 and retry_after is not None)


def _not_answered(exc: TransportError, mutating: bool, where: str) -> CloudError:
    """A request that got no answer, classified by how far it got (withheld by the stop
    right before the wire: NOT_SENT, ``STOPPED``, as if stopped before it was handed over)."""
    if exc.delivery is Delivery.WITHHELD:
        return _stopped()
    return CloudError(_kind_of(exc.delivery, mutating), f"{where}: {exc}")


def _kind_of(delivery: Delivery, mutating: bool) -> ErrorKind:
    """May the request be sent again? Only if it never left, or it was a read."""
    if delivery is Delivery.NOT_SENT:
        return ErrorKind.NOT_SENT
    if delivery is Delivery.INVALID:
        return ErrorKind.PERMANENT
    return ErrorKind.UNKNOWN if mutating else ErrorKind.TRANSIENT


class _Headers(NamedTuple):
    """A request's headers as signed, and their signature's shape (None: signed step by step)."""

    headers: dict[str, str]
    shape: Shape | None


class _Route(NamedTuple):
    """A base URL and a header set as a request uses them (:class:`_Base`, :class:`_Headers`)."""

    origin: str
    host: str
    path: str
    budget: TokenBucket | None
    slots: Slots
    headers: dict[str, str]
    shape: Shape | None


class _Base(NamedTuple):
    """A base URL as its requests use it."""

    origin: str  # scheme://host
    host: str  # without user info
    path: str
    budget: TokenBucket | None  # this key's at the host (None: a host cap too, see admit)
    slots: Slots  # the host's connection slots


# ``json.loads`` of a body, in two steps when it opens with ``{`` then anything but a NUL (what
# ``json.loads`` finds to be UTF-8 after a look at its first bytes, a cost as large as the
# decoding of a small answer): its text, then the C scanner of the stdlib's decoder on it (what
# ``json.loads`` runs, without its two Python frames and two regular expressions).
_SCAN: Callable[[str, int], tuple[object, int]] = make_scanner(cast(Any, json.JSONDecoder()))
_JSON_SPACE = " \t\n\r"
# ``orjson`` reads a body two to three times faster than the stdlib; where it would not read it
# as ``json.loads`` does (an integer beyond 64 bits: core/exactjson.py), or refuses it (NaN and
# Infinity, a lone surrogate, a byte order mark, UTF-16 or -32, a blank body...), the stdlib
# reads it as before.
_orjson_loads = orjson.loads


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object ``raw`` holds, as ``json.loads`` reads it (``{}`` for a blank body);
    None if it holds anything else or is not JSON."""
    if orjson_exact(raw):
        try:
            body = _orjson_loads(raw)
        except Exception:  # noqa: BLE001 - any refusal at all: the stdlib's reading decides
            return _json_object_stdlib(raw)
        return body if body.__class__ is dict else None
    return _json_object_stdlib(raw)


def _json_object_stdlib(raw: bytes) -> dict[str, Any] | None:
    """:func:`_json_object` by the stdlib alone (``json.loads``' reading of any body)."""
    body: object = None
    if raw[:1] == b"{" and raw[1:2] != b"\x00":
        try:
            text = raw.decode("utf-8", "surrogatepass")
            body, end = _SCAN(text, 0)
        except (StopIteration, ValueError, UnicodeDecodeError):
            return None
        if end != len(text) and text[end:].strip(_JSON_SPACE):
            return None  # more after the object: what json.loads calls "Extra data"
    elif not raw.strip():
        return {}
    else:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
    return body if isinstance(body, dict) else None


def _decode(raw: bytes, where: str, status: int, *, mutating: bool) -> dict[str, Any]:
    body = _json_object(raw)
    if body is None:
        raise _not_json(where, status, mutating=mutating)
    return body


def _not_json(where: str, status: int, *, mutating: bool) -> CloudError:
    kind = ErrorKind.UNKNOWN if mutating else ErrorKind.TRANSIENT
    return CloudError(kind, f"{where}: the answer is not a JSON object", status=status)
