"""Client-side request budgets: one per (access key, host), an optional cap per host, and a
bound on the requests on the wire to one host.

The API gateway throttles per user and API (``APIGW.0308``, "policy user over ratelimit"): the
budget belongs to each access key at each host. A :class:`TokenBucket` spaces one key's
requests; a 429 (or a 503 with ``Retry-After``) pauses every request of that key to that host
until the ``Retry-After`` has passed, and lowers the key's rate (multiplicative decrease); the
rate grows back slowly while no refusal comes (additive increase).

Waiters are served by priority, then in arrival order: a copy submission before any poll, a
poll of a job near its predicted end before a far-off probe (see :data:`SUBMIT`), and the
calls after a copy (verify, carry: ``core.cloud.AFTER_COPY``) behind every poll. A free
connection slot goes in the same order (:class:`Slots`): a resumed run's thousands of checks
never keep the polls of its copies in flight waiting.

The budget and the connection slot are taken *before* a request's timed part starts
(``calls.py``): a request that never left the process is never an unknown outcome.
Time comes from the :class:`~orchestrator.clock.Clock` seam, so the buckets are tested on
virtual time without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math

import anyio
import anyio.lowlevel

from orchestrator.clock import Clock
from orchestrator.ims.scopes import cancel_pending

# A bucket refilled by float arithmetic may hold 0.9999999 tokens after the exact wait, and a
# clock near 1.8e9 s cannot move by less than ~2.4e-7 s: a shorter wait would never end.
_EPSILON = 1e-6
_MIN_WAIT = 1e-3

SUBMIT = -math.inf  # the priority of a copy submission: ahead of every read
READ = 0.0  # the priority of a read that names none (lower values go first)
MAX_IN_FLIGHT_PER_HOST = 100  # requests on the wire to one host at once; the pool matches it
DECREASE = 0.5  # the rate's factor on a refusal
RECOVERY_SECONDS = 60.0  # from zero to the configured rate, linearly, while nothing is refused
DEFAULT_PAUSE = 1.0  # seconds a refusal without Retry-After pauses the key
MIN_RATE = 0.1  # requests per second a key keeps however often it is refused


class _Waiter:
    __slots__ = ("event", "gone", "key")

    def __init__(self, key: tuple[float, int]) -> None:
        self.key = key
        self.event: anyio.Event | None = None
        self.gone = False

    def __lt__(self, other: _Waiter) -> bool:
        return self.key < other.key


class TokenBucket:
    """``rate_per_second`` requests on average, up to ``burst`` at once after a quiet spell.

    Waiters are served by ``priority`` (lowest first), then in arrival order, so a crowd of
    tasks cannot starve one of them. A rate that is zero, negative or infinite means no limit.
    With ``adaptive``, :meth:`refused` pauses the bucket and halves its rate, which then grows
    back linearly to the configured one over :data:`RECOVERY_SECONDS`.
    """

    def __init__(
        self, rate_per_second: float, burst: float, clock: Clock, *, adaptive: bool = False
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self._unlimited = rate_per_second <= 0 or math.isinf(rate_per_second)
        self._ceiling = rate_per_second
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        self._adaptive = adaptive
        self._tokens = float(burst)
        self._updated = clock.now()
        self._paused_until = -math.inf
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self.refusals = 0

    @property
    def rate(self) -> float:
        self._refill()
        return self._rate

    @property
    def paused_until(self) -> float:
        """Until when no request may go (a Retry-After), on the clock."""
        return self._paused_until

    @property
    def tokens(self) -> float:
        """Tokens available now (for tests and statistics)."""
        self._refill()
        return self._tokens

    async def acquire(self, priority: float = READ) -> None:
        """Take one token, sleeping on the clock until one is available and it is our turn."""
        if self._unlimited and not self._adaptive:
            await anyio.lowlevel.checkpoint()
            return
        waiter = _Waiter((priority, next(self._seq)))
        heapq.heappush(self._waiters, waiter)
        try:
            while True:
                self._drop_gone()
                if self._waiters[0] is waiter:
                    wait = self._wait()
                    if wait <= 0:
                        heapq.heappop(self._waiters)
                        self._tokens = max(0.0, self._tokens - 1)
                        waiter.gone = True
                        self._wake_head()
                        await anyio.lowlevel.checkpoint()
                        return
                    await self._clock.sleep(wait)  # a newcomer ahead of us may be head now
                else:
                    waiter.event = anyio.Event()
                    await waiter.event.wait()
        finally:
            if not waiter.gone:  # cancelled while waiting: nothing taken
                waiter.gone = True
                self._wake_head()

    def try_acquire(self) -> bool:
        """Take one token now if one is free and nobody waits (True), else nothing (False):
        the common case of :meth:`acquire`, without its queue entry and trip through the loop."""
        if self._unlimited and not self._adaptive:
            return True
        waiters = self._waiters
        if waiters:
            self._drop_gone()
            if waiters:
                return False
        # What ``_wait() <= 0`` says, on one reading of the clock and without its calls.
        now = self._clock.now()
        self._refill(now)
        if self._paused_until > now:
            return False
        if self._tokens < 1 - _EPSILON and not self._unlimited:
            return False
        self._tokens = max(0.0, self._tokens - 1)
        return True

    def refused(self, retry_after: float | None) -> None:
        """The service refused a request of this bucket (429, or 503 with Retry-After): no
        request goes before ``retry_after`` has passed, and the rate is lowered."""
        now = self._clock.now()
        self.refusals += 1
        pause = retry_after if retry_after is not None else DEFAULT_PAUSE
        self._paused_until = max(self._paused_until, now + pause)
        self._refill()
        self._tokens = 0.0  # no burst right after the pause
        if self._adaptive and not self._unlimited:
            self._rate = max(MIN_RATE, self._rate * DECREASE)

    def _wait(self) -> float:
        """Seconds until a token may be taken (0: now)."""
        self._refill()
        pause = self._paused_until - self._clock.now()
        if self._unlimited:
            return max(0.0, pause)
        token = 0.0 if self._tokens >= 1 - _EPSILON else (1 - self._tokens) / self._rate
        wait = max(pause, token, 0.0)
        return 0.0 if wait <= 0 else max(wait, _MIN_WAIT)

    def _drop_gone(self) -> None:
        while self._waiters and self._waiters[0].gone:
            heapq.heappop(self._waiters)

    def _wake_head(self) -> None:
        self._drop_gone()
        if self._waiters:
            event = self._waiters[0].event
            if event is not None:
                event.set()

    def _refill(self, now: float | None = None) -> None:
        if now is None:
            now = self._clock.now()
        updated = self._updated
        self._updated = now
        if self._unlimited:
            return
        # A clock stepped backwards (NTP) must not stall the bucket: count no time at all.
        if self._adaptive and self._rate < self._ceiling:
            paused = self._paused_until
            since = updated if updated > paused else paused  # time since the pause
            if now > since:
                step = self._ceiling / RECOVERY_SECONDS  # additive increase
                self._rate = min(self._ceiling, self._rate + step * (now - since))
        if now > updated:
            tokens = self._tokens + (now - updated) * self._rate
            self._tokens = tokens if tokens < self._burst else self._burst


class Slots:
    """At most ``size`` holders at once (the requests on the wire to one host); a freed slot
    goes to the waiter of lowest ``priority``, then the earliest (an ``anyio.Semaphore`` serves
    arrival order only: a poll would wait behind every check queued before it).

    A waiter is a future of the running loop in a heap of ``(priority, arrival, future)``
    tuples (compared in C): the runs use anyio on asyncio (``eventloop.py``), and a busy host
    has thousands of waiters, each of which paid for an ``anyio.Event`` (its backend looked up,
    an asyncio event and a coroutine of its own) and a comparison in Python."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def value(self) -> int:
        """Free slots now (as ``anyio.Semaphore.value``)."""
        return self._free

    def take(self) -> bool:
        """Take a slot now (True) if one is free and nobody waits for one, else nothing
        (False): :meth:`acquire_nowait` without the exception (a busy host's requests mostly
        find no slot free)."""
        waiters = self._waiters
        while waiters and waiters[0][2].done():  # cancelled while waiting
            heapq.heappop(waiters)
        if self._free <= 0 or waiters:
            return False
        self._free -= 1
        return True

    def acquire_nowait(self) -> None:
        """Take a slot now, or raise ``anyio.WouldBlock`` (a slot is free only if nobody
        waits for one)."""
        if not self.take():
            raise anyio.WouldBlock

    async def acquire(self, priority: float = READ) -> None:
        """Take a slot, waiting for our turn by ``priority``. A waiter cancelled once a slot
        was handed to it hands the slot on."""
        if cancel_pending():
            await anyio.lowlevel.checkpoint_if_cancelled()
        if self.take():
            await anyio.lowlevel.cancel_shielded_checkpoint()
            return
        handed = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), handed))
        try:
            await handed
        except BaseException:
            # Cancelled: the future is too, and release() passes it by; but if the slot was
            # handed to it first (its cancellation on the way), it is not ours to keep.
            if handed.done() and not handed.cancelled():
                self.release()
            raise

    def release(self) -> None:
        """Hand the slot to the first waiter still waiting, or free it."""
        waiters = self._waiters
        while waiters:
            handed = heapq.heappop(waiters)[2]
            if not handed.done():  # done: cancelled while waiting
                handed.set_result(None)  # the slot is the waiter's now
                return
        self._free += 1


class RateLimits:
    """The budgets of one run: per (access key, host), an optional cap per host shared by every
    key, and a bound on the requests in flight per host. Every tenant's client shares them."""

    def __init__(
        self,
        rate: float,
        clock: Clock,
        *,
        host_rate: float | None = None,
        burst: float | None = None,
        in_flight: int = MAX_IN_FLIGHT_PER_HOST,
    ) -> None:
        self._rate = rate
        self._host_rate = host_rate or 0.0
        self._burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._in_flight = max(1, in_flight)
        self._keys: dict[tuple[str, str], TokenBucket] = {}
        self._hosts: dict[str, TokenBucket] = {}
        self._slots: dict[str, Slots] = {}

    @property
    def in_flight(self) -> int:
        """Requests on the wire to one host at once (the connection pool is sized to match)."""
        return self._in_flight

    @property
    def host_capped(self) -> bool:
        """Whether a cap per host is set (then :meth:`admit` waits for it too)."""
        return self._host_rate > 0

    @property
    def refusals(self) -> int:
        """Refusals (429, 503 with Retry-After) received over all keys and hosts."""
        return sum(bucket.refusals for bucket in self._keys.values())

    def for_key(self, key: str, host: str) -> TokenBucket:
        """The budget of access key ``key`` at ``host`` (case does not matter), made on first
        use."""
        ident = (key, host.lower())
        bucket = self._keys.get(ident)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, self._clock, adaptive=True)
            self._keys[ident] = bucket
        return bucket

    def for_host(self, host: str) -> TokenBucket:
        """The cap of ``host`` shared by every key (``[rate] host_requests_per_second``; no
        limit when unset)."""
        name = host.lower()
        bucket = self._hosts.get(name)
        if bucket is None:
            burst = max(1.0, self._host_rate)
            bucket = TokenBucket(self._host_rate, burst, self._clock)
            self._hosts[name] = bucket
        return bucket

    def slots(self, host: str) -> Slots:
        """The requests on the wire to ``host``: at most :attr:`in_flight` at once, a freed
        one to the waiter of lowest priority."""
        name = host.lower()
        slots = self._slots.get(name)
        if slots is None:
            slots = self._slots[name] = Slots(self._in_flight)
        return slots

    def try_admit(self, key: str, host: str) -> bool:
        """Admit a request at once if the key's budget has a token and nobody waits for it
        (no host cap set); False: nothing taken, :meth:`admit` waits its turn."""
        return self._host_rate <= 0 and self.for_key(key, host).try_acquire()

    async def admit(self, key: str, host: str, priority: float = READ) -> None:
        """Wait for the key's budget at ``host``, then for the host's cap."""
        await self.for_key(key, host).acquire(priority)
        if self._host_rate > 0:
            await self.for_host(host).acquire(priority)
