"""Exponential back-off as a value: how long to wait after the n-th try. Pure.

A strategy is ``base x factor^n`` seconds, the exponent capped at ``max_exponent`` (so the
float never overflows) and the result at ``cap``. With ``full_jitter`` the wait is drawn
uniformly in ``[0, that]`` and never below ``base`` ("full jitter": many clients refused at
once spread out instead of coming back together). The strategies of the engine:

* a refused or unanswered request, a retryable failed job, a target that could not be
  listed: ``retry_backoff`` (full jitter, from ``poll_min`` up to ``backoff_max``);
* the cloud's "too many tasks" (IMG.0060) for an account: ``back_pressure_backoff``;
* looking again for a copy in the target: ``look_backoff`` (no jitter, up to ``poll_max``);
* polls of a job with nothing to go on: :func:`orchestrator.core.polling.next_delay` (its
  own +-10 % jitter on top of the exponential part).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache


def doubled(base: float, attempt: int, max_exponent: int | None, factor: float = 2.0) -> float:
    """``base x factor^min(attempt, max_exponent)``: :class:`ExponentialBackoff`'s ceiling
    before its cap, for a caller that would otherwise make a back-off per call (a poll)."""
    exponent = attempt if max_exponent is None else min(attempt, max_exponent)
    return base * factor**exponent


@dataclass(frozen=True)
class ExponentialBackoff:
    """``min(cap, base x factor^min(attempt, max_exponent))``, optionally with full jitter."""

    base: float  # seconds after attempt 0; also the floor of a jittered wait
    cap: float = math.inf
    factor: float = 2.0
    max_exponent: int | None = None  # None: the exponent is not capped
    full_jitter: bool = False

    def ceiling(self, attempt: int) -> float:
        """The longest wait after ``attempt`` (the wait itself without jitter)."""
        return min(self.cap, doubled(self.base, attempt, self.max_exponent, self.factor))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``attempt``; ``rng`` draws the jitter (needed with it)."""
        ceiling = self.ceiling(attempt)
        if not self.full_jitter:
            return ceiling
        if rng is None:
            raise ValueError("a back-off with full jitter needs a random number generator")
        return max(self.base, rng.uniform(0.0, ceiling))


# The strategies below are values made from a run's timing: one of each is made and shared
# (each item's drive and checks asked for their own: two objects per item, for nothing).
_shared = lru_cache(maxsize=32)


@_shared
def retry_backoff(poll_min: float, backoff_max: float) -> ExponentialBackoff:
    """A new attempt after a refusal or a retryable failure (the attempt number counts)."""
    return ExponentialBackoff(poll_min, backoff_max, max_exponent=20, full_jitter=True)


@_shared
def back_pressure_backoff(backoff_min: float, backoff_max: float) -> ExponentialBackoff:
    """An account's pause after IMG.0060, by the number of refusals in a row (a tenant held
    at its cap by copies started elsewhere can be refused for days: the exponent is capped so
    the float never overflows)."""
    return ExponentialBackoff(backoff_min, backoff_max, max_exponent=30, full_jitter=True)


@_shared
def look_backoff(poll_min: float, poll_max: float) -> ExponentialBackoff:
    """Looking again in the target region (for a copy to be active, or to turn up)."""
    return ExponentialBackoff(poll_min, poll_max, max_exponent=16)
