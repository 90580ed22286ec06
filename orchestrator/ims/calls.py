"""One tenant's signed JSON calls: attempts with back-off, each failure classified.

An attempt is rate limited per host, signed (``SDK-HMAC-SHA256``) over exactly the path, query
and body bytes it sends, and handed to the :class:`~orchestrator.ims.transport.Transport`. Its
failure is classified here into a :class:`CloudError`:

    not sent (refused, DNS, TLS handshake)      -> NOT_SENT   (retried: nothing left this machine)
    maybe sent (timeout, reset, lost) on a GET  -> TRANSIENT  (retried)
    maybe sent on the POST                      -> UNKNOWN    (raised at once: never re-POST)
    an HTTP error answer                        -> errors.classify (429 retried, AUTH never)

Reads and the copy POST share one retry loop (tenacity) that retries only NOT_SENT and
TRANSIENT; for the POST the only TRANSIENT answer is a gateway refusal (429 / ``APIGW.0308``),
which the service never saw.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from orchestrator.clock import Clock
from orchestrator.core.cloud import SEND_STOP, STOPPED, CloudError, ErrorKind, StopFlag
from orchestrator.core.credentials import Credentials
from orchestrator.ims.errors import classify, parse_error_body
from orchestrator.ims.ratelimit import RateLimits, TokenBucket
from orchestrator.ims.signer import DATE_FORMAT, canonical_query, sign
from orchestrator.ims.transport import Delivery, HttpRequest, Transport, TransportError

log = structlog.get_logger(__name__)

JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
PROJECT_HEADER = "X-Project-Id"
MAX_ATTEMPTS = 6
BACKOFF_BASE = 0.5
RETRYABLE = frozenset({ErrorKind.NOT_SENT, ErrorKind.TRANSIENT})

Params = Sequence[tuple[str, str]]


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, CloudError) and exc.kind in RETRYABLE and exc.code != STOPPED


async def _acquire_unless(bucket: TokenBucket, stop: StopFlag | None) -> None:
    """A token of the rate budget, unless ``stop`` is set first (then none is taken)."""
    if stop is None:
        await bucket.acquire()
        return
    async with anyio.create_task_group() as group:

        async def stopper() -> None:
            await stop.wait()
            group.cancel_scope.cancel()

        group.start_soon(stopper)
        await bucket.acquire()
        group.cancel_scope.cancel()


class Backoff:
    """Full-jitter exponential backoff, capped, and never shorter than the server's Retry-After."""

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self._base = base
        self._cap = cap
        self._rng = rng

    def __call__(self, state: RetryCallState) -> float:
        exponent = min(state.attempt_number - 1, 32)
        delay = self._rng.uniform(0.0, min(self._cap, self._base * 2**exponent))
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, CloudError) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
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

    async def call(
        self,
        method: str,
        base: str,
        path: str,
        *,
        params: Params = (),
        body: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        project_id: str | None = None,
    ) -> dict[str, Any]:
        """One logical call: attempts until success, a final error, or the attempt budget."""

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            log.info(
                "ims.retry",
                method=method,
                path=path,
                attempt=state.attempt_number,
                wait=round(state.next_action.sleep, 3) if state.next_action else None,
                error=str(exc),
                kind=exc.kind.value if isinstance(exc, CloudError) else None,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._backoff,
            retry=retry_if_exception(_retryable),
            sleep=self._retry_sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(method, base, path, params, body, project_id)
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover

    async def _attempt(
        self,
        method: str,
        base: str,
        path: str,
        params: Params,
        body: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
        project_id: str | None,
    ) -> dict[str, Any]:
        """Send one signed request; its JSON answer, or a classified CloudError."""
        mutating = method != "GET"
        split = urlsplit(base)
        host = split.netloc.rpartition("@")[2]
        full_path = split.path + path
        query = canonical_query(params)
        payload = b"" if body is None else json.dumps(body).encode()
        headers: dict[str, str] = {}
        if body is not None:
            headers["Content-Type"] = JSON_CONTENT_TYPE
        if project_id is not None:
            headers[PROJECT_HEADER] = project_id
        where = f"{method} {host}{full_path}"

        stop = SEND_STOP.get() if mutating else None
        await _acquire_unless(self._limits.for_host(host), stop)
        if stop is not None and stop.is_set():  # checked last, right before sending
            raise CloudError(
                ErrorKind.NOT_SENT, f"{where}: not sent: the run is stopping", code=STOPPED
            )
        signed = sign(
            self._credentials, method, host, full_path, query, headers, payload, self._sdk_date()
        )
        url = f"{split.scheme}://{host}{full_path}" + (f"?{query}" if query else "")
        request = HttpRequest(method, url, signed, payload if body is not None else None)
        try:
            response = await self._transport.send(request)
        except TransportError as exc:
            raise CloudError(_kind_of(exc.delivery, mutating), f"{where}: {exc}") from exc

        if response.status >= 300:
            code, message, request_id = parse_error_body(response.body)
            raise classify(
                response.status,
                code,
                message,
                mutating=mutating,
                retry_after=self._retry_after(response.header("Retry-After")),
                request_id=request_id or response.header("X-Request-Id"),
            )
        return _decode(response.body, where, response.status, mutating=mutating)

    def _retry_after(self, value: str | None) -> float | None:
        """``Retry-After`` in seconds: a number, or an HTTP date relative to the clock."""
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, moment.timestamp() - self._clock.now())

    def _sdk_date(self) -> str:
        return datetime.fromtimestamp(self._clock.now(), tz=UTC).strftime(DATE_FORMAT)


def _kind_of(delivery: Delivery, mutating: bool) -> ErrorKind:
    """May the request be sent again? Only if it never left, or it was a read."""
    if delivery is Delivery.NOT_SENT:
        return ErrorKind.NOT_SENT
    if delivery is Delivery.INVALID:
        return ErrorKind.PERMANENT
    return ErrorKind.UNKNOWN if mutating else ErrorKind.TRANSIENT


def _decode(raw: bytes, where: str, status: int, *, mutating: bool) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        kind = ErrorKind.UNKNOWN if mutating else ErrorKind.TRANSIENT
        raise CloudError(kind, f"{where}: the answer is not a JSON object", status=status)
    return body
