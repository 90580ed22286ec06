"""Seeded fault injection: a pure decision object shared by the HTTP and the in-memory fronts.

A :class:`FaultPlan` answers ``decide(kind)`` once per request of an endpoint kind (``list``,
``copy``, ``job``, ``iam``, ``quota``) with a :class:`Fault` or ``None``. Random decisions come
from one generator per kind seeded from ``(seed, kind)``, so the faults one kind sees do not
depend on how many requests of another kind came first. Scripted faults (``enqueue``) are
served first, in order, which is how tests force "the next copy loses its reply".

JSON form (``to_json`` / ``from_json``; the ``POST /_sim/faults`` body)::

    {"seed": 7, "retry_after": 1, "hang_seconds": 30,
     "rates": {"copy": {"500": 0.02, "lost_reply": 0.05}, "job": {"503": 0.05, "429": 0.02}},
     "next": {"copy": ["lost_reply"]},
     "outage": {"from": 1800000000, "until": 1800000060, "mode": "503", "regions": ["cn-east-3"]}}

An ``outage`` makes every request (of the listed regions' IMS, or every request when
``regions`` is absent) fail from ``from`` to ``until`` (the world's clock): ``"503"`` answers
the gateway's 503, ``"refuse"`` answers nothing (the in-memory front: connection refused; the
HTTP front: the connection is closed at once, without an answer).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

KINDS = ("list", "copy", "job", "iam", "quota", "tags", "tag", "patch", "members", "delete")


class Fault(StrEnum):
    ERROR_500 = "500"  # answer 500; a copy is NOT carried out
    ERROR_503 = "503"  # answer 503 (gateway: backend unavailable); NOT carried out
    THROTTLE = "429"  # answer 429 APIGW.0308 with Retry-After; NOT carried out
    RESET = "reset"  # drop the connection without an answer; NOT carried out
    HANG = "hang"  # answer nothing for ``hang_seconds``, then drop; NOT carried out
    LOST_REPLY = "lost_reply"  # copy only: carry the copy out, then drop without answering
    ERROR_AFTER = "500_after"  # copy only: carry the copy out, then answer 500

    @property
    def performs(self) -> bool:
        """Whether the request's effect happens in the cloud despite the fault."""
        return self in (Fault.LOST_REPLY, Fault.ERROR_AFTER)


COPY_ONLY = frozenset({Fault.LOST_REPLY, Fault.ERROR_AFTER})
OUTAGE_MODES = ("503", "refuse")


@dataclass(frozen=True)
class Outage:
    """A period when the cloud (or some regions of it) does not answer."""

    start: float
    until: float
    mode: str = "503"
    regions: frozenset[str] | None = None  # None: every region, and IAM

    def hits(self, now: float, region: str | None) -> str | None:
        """The mode, if a request to ``region`` (None: IAM) at ``now`` meets the outage."""
        if not self.start <= now < self.until:
            return None
        if self.regions is not None and region not in self.regions:
            return None
        return self.mode

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": self.start, "until": self.until, "mode": self.mode}
        if self.regions is not None:
            out["regions"] = sorted(self.regions)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Outage:
        mode = str(raw.get("mode", "503"))
        if mode not in OUTAGE_MODES:
            raise ValueError(f"outage mode {mode!r} is not one of {', '.join(OUTAGE_MODES)}")
        regions = raw.get("regions")
        return cls(
            float(raw["from"]),
            float(raw["until"]),
            mode,
            frozenset(str(r) for r in regions) if regions is not None else None,
        )


@dataclass(frozen=True)
class FaultRates:
    """Probabilities (each 0..1, summing to at most 1) of each fault for one endpoint kind."""

    error_500: float = 0.0
    error_503: float = 0.0
    throttle: float = 0.0
    reset: float = 0.0
    hang: float = 0.0
    lost_reply: float = 0.0
    error_after: float = 0.0

    def pairs(self) -> list[tuple[Fault, float]]:
        return [
            (Fault.ERROR_500, self.error_500),
            (Fault.ERROR_503, self.error_503),
            (Fault.THROTTLE, self.throttle),
            (Fault.RESET, self.reset),
            (Fault.HANG, self.hang),
            (Fault.LOST_REPLY, self.lost_reply),
            (Fault.ERROR_AFTER, self.error_after),
        ]

    def to_json(self) -> dict[str, float]:
        return {fault.value: p for fault, p in self.pairs() if p}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FaultRates:
        names = [f.name for f in fields(cls)]
        by_fault = {fault.value: n for (fault, _), n in zip(cls().pairs(), names, strict=True)}
        values: dict[str, float] = {}
        for key, value in raw.items():
            name = by_fault.get(str(key)) or (str(key) if str(key) in by_fault.values() else None)
            if name is None:
                raise ValueError(f"unknown fault {key!r} (known: {', '.join(by_fault)})")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"fault {key!r}: probability must be a number, got {value!r}")
            values[name] = float(value)
        return cls(**values)


class FaultPlan:
    """Which request fails how. Mutable only through ``decide`` (it draws) and ``enqueue``."""

    def __init__(
        self,
        seed: int = 0,
        rates: Mapping[str, FaultRates | Mapping[str, Any]] | None = None,
        *,
        retry_after: float = 1.0,
        hang_seconds: float = 30.0,
        script: Mapping[str, Iterable[Fault | str]] | None = None,
        outage: Outage | None = None,
    ) -> None:
        self.seed = seed
        self.outage = outage
        self.retry_after = float(retry_after)
        self.hang_seconds = float(hang_seconds)
        self.rates: dict[str, FaultRates] = {}
        for kind, value in (rates or {}).items():
            rate = value if isinstance(value, FaultRates) else FaultRates.from_json(value)
            _check(kind, rate)
            self.rates[kind] = rate
        self._rngs = {kind: random.Random(f"{seed}:{kind}") for kind in KINDS}
        self._queued: dict[str, deque[Fault]] = {kind: deque() for kind in KINDS}
        self.decided: dict[str, dict[str, int]] = {}
        for kind, faults in (script or {}).items():
            self.enqueue(kind, *faults)

    def enqueue(self, kind: str, *faults: Fault | str) -> None:
        """Force the next requests of ``kind`` to meet these faults, in order."""
        _check_kind(kind)
        for fault in faults:
            value = Fault(fault)
            if value in COPY_ONLY and kind != "copy":
                raise ValueError(f"fault {value.value!r} only applies to copy, not {kind!r}")
            self._queued[kind].append(value)

    def decide(self, kind: str) -> Fault | None:
        """The fault for the next request of ``kind``, or None to serve it normally."""
        _check_kind(kind)
        fault: Fault | None = None
        if self._queued[kind]:
            fault = self._queued[kind].popleft()
        elif kind in self.rates:
            draw = self._rngs[kind].random()
            for candidate, p in self.rates[kind].pairs():
                if draw < p:
                    fault = candidate
                    break
                draw -= p
        if fault is not None:
            counts = self.decided.setdefault(kind, {})
            counts[fault.value] = counts.get(fault.value, 0) + 1
        return fault

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "retry_after": self.retry_after,
            "hang_seconds": self.hang_seconds,
            "rates": {kind: rate.to_json() for kind, rate in self.rates.items()},
            "next": {kind: [f.value for f in q] for kind, q in self._queued.items() if q},
            **({"outage": self.outage.to_json()} if self.outage is not None else {}),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FaultPlan:
        unknown = set(raw) - {"seed", "retry_after", "hang_seconds", "rates", "next", "outage"}
        if unknown:
            raise ValueError(f"unknown fault plan keys: {', '.join(sorted(unknown))}")
        rates = raw.get("rates") or {}
        script = raw.get("next") or {}
        if not isinstance(rates, Mapping) or not isinstance(script, Mapping):
            raise ValueError("fault plan: 'rates' and 'next' must be objects keyed by kind")
        return cls(
            seed=int(raw.get("seed", 0)),
            rates=rates,
            retry_after=float(raw.get("retry_after", 1.0)),
            hang_seconds=float(raw.get("hang_seconds", 30.0)),
            script=script,
            outage=Outage.from_json(raw["outage"]) if raw.get("outage") else None,
        )


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown endpoint kind {kind!r} (known: {', '.join(KINDS)})")


def _check(kind: str, rate: FaultRates) -> None:
    _check_kind(kind)
    total = 0.0
    for fault, p in rate.pairs():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fault {kind}/{fault.value}: probability {p} is not in 0..1")
        if p and fault in COPY_ONLY and kind != "copy":
            raise ValueError(f"fault {fault.value!r} only applies to copy, not {kind!r}")
        total += p
    if total > 1.0 + 1e-9:
        raise ValueError(f"faults of {kind!r} add up to {total:.3f}, more than 1")
