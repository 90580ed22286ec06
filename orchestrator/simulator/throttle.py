"""The gateway's per-user throttling, as the simulator plays it: at most ``rate`` requests of
one access key to one host per one-second window; beyond it ``429 APIGW.0308`` with a
``Retry-After`` that runs to the window's end.

It also keeps the truth a client is judged on: how many refusals it got, and how many of its
requests arrived inside a ``Retry-After`` window already announced to that key and host (a
client that honours the budget sends none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# A request already on the wire when the refusal was sent arrives a little after it: not a
# request sent inside the window.
IN_FLIGHT_GRACE = 0.05


@dataclass
class _Window:
    start: float = -math.inf
    count: int = 0
    refused_at: float = -math.inf
    retry_until: float = -math.inf


@dataclass
class KeyRateGate:
    """``rate`` requests per second per (access key, host); ``None`` or 0: no limit."""

    rate: float | None = None
    refusals: int = 0
    inside_retry_after: int = 0
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)

    def admit(self, access_key: str, host: str, now: float) -> float | None:
        """None if the request is served; else the Retry-After (seconds) of its 429."""
        window = self._windows.setdefault((access_key, host), _Window())
        if window.refused_at + IN_FLIGHT_GRACE <= now < window.retry_until:
            self.inside_retry_after += 1
        if not self.rate:
            return None
        if now - window.start >= 1.0:
            window.start, window.count = math.floor(now), 0
        window.count += 1
        if window.count <= self.rate:
            return None
        self.refusals += 1
        retry_after = max(0.001, window.start + 1.0 - now)
        window.refused_at = now
        window.retry_until = max(window.retry_until, now + retry_after)
        return retry_after
