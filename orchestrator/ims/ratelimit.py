"""Client-side rate limits: one token bucket per endpoint host, shared by every tenant's client.

The API gateway throttles per API and per account (``APIGW.0308``); spacing our own requests
keeps a large run from tripping it. Time comes from the :class:`~orchestrator.clock.Clock` seam,
so the buckets are tested on virtual time without sleeping.
"""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel

from orchestrator.clock import Clock

# A bucket refilled by float arithmetic may hold 0.9999999 tokens after the exact wait.
_EPSILON = 1e-9


class TokenBucket:
    """``rate_per_second`` requests on average, up to ``burst`` at once after a quiet spell.

    Waiters are served one at a time, in arrival order (the lock is FIFO), so a crowd of tasks
    cannot starve one of them. A rate that is zero, negative or infinite means no limit.
    """

    def __init__(self, rate_per_second: float, burst: float, clock: Clock) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self._unlimited = rate_per_second <= 0 or math.isinf(rate_per_second)
        self._rate = rate_per_second
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock.now()
        self._lock = anyio.Lock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def tokens(self) -> float:
        """Tokens available now (for tests and statistics)."""
        self._refill()
        return self._tokens

    async def acquire(self) -> None:
        """Take one token, sleeping on the clock until one is available."""
        if self._unlimited:
            await anyio.lowlevel.checkpoint()
            return
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1 - _EPSILON:
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._clock.sleep((1 - self._tokens) / self._rate)

    def _refill(self) -> None:
        now = self._clock.now()
        # A clock stepped backwards (NTP) must not stall the bucket: count no time at all.
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        if not self._unlimited:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)


class RateLimits:
    """The buckets of one run, keyed by host: every tenant's client shares them."""

    def __init__(self, rate: float, clock: Clock, *, burst: float | None = None) -> None:
        self._rate = rate
        self._burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def for_host(self, host: str) -> TokenBucket:
        """The bucket of ``host`` (the URL's netloc; case does not matter), made on first use."""
        key = host.lower()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, self._clock)
            self._buckets[key] = bucket
        return bucket
