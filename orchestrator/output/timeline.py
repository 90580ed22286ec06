"""Who held which copy slot when: bars per tenant, worked out from the items' times. Pure.

A bar runs from an item's ``submitted_at`` to its ``finished_at``: its last attempt. Earlier
attempts (a request refused, or a copy proven absent and sent again) keep no times in the
checkpoint; :func:`earlier_attempts` reads them from the lines of events.jsonl, so the slot
they held does not look idle. A copy still in flight has no end: its bar stops at the last
moment the checkpoint knows of (``open_end``). A copy adopted after a restart or found already
in the target may have no ``submitted_at``: it becomes a :class:`Mark` at its end only, and
items with no time at all are counted. Lanes come from the times (a copy takes the first lane
free when it starts), so they show how many copies overlapped, not which slot the cloud used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from orchestrator.core.model import Item, Phase, PublicState

HOLDING = frozenset(phase.value for phase in Phase if phase.holds_slot)  # phases with a slot


@dataclass(frozen=True)
class Bar:
    item: Item
    start: float
    end: float
    lane: int
    open_end: bool  # no finished_at: still in flight at the last save
    earlier: Attempt | None = None  # an attempt before the item's last one (from the events)


@dataclass(frozen=True)
class Attempt:
    """An earlier attempt of an item, as events.jsonl tells it."""

    key: str
    number: int
    start: float
    end: float
    outcome: str  # the detail of the event that ended it


def _event_time(event: Mapping[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(str(event.get("timestamp"))).timestamp()
    except ValueError:
        return None


def earlier_attempts(lines: Iterable[str], items: Iterable[Item]) -> list[Attempt]:
    """Each item's attempts before its last one: from the first event that holds a slot to the
    first that does not (pending again, or an end). Lines that are not events are skipped."""
    last = {item.key: item.attempt for item in items}
    opened: dict[str, tuple[int, float]] = {}
    out = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        key, phase, at = event.get("item"), event.get("phase"), _event_time(event)
        if not isinstance(key, str) or not isinstance(phase, str) or at is None:
            continue
        number = event.get("attempt")
        if phase in HOLDING:
            opened.setdefault(key, (number if isinstance(number, int) else 1, at))
        elif key in opened:
            first, start = opened.pop(key)
            if first < last.get(key, 0):
                out.append(Attempt(key, first, start, at, str(event.get("detail") or phase)))
    return out


@dataclass(frozen=True)
class Mark:
    """A copy whose end is known but not its start (adopted)."""

    item: Item
    at: float


@dataclass
class Lanes:
    tenant: str
    bars: list[Bar] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    @property
    def count(self) -> int:
        return max((bar.lane + 1 for bar in self.bars), default=0)


@dataclass
class Timeline:
    tenants: list[Lanes]
    start: float
    end: float
    no_times: int  # succeeded or in flight, yet without any recorded time

    @property
    def empty(self) -> bool:
        return not any(t.bars or t.marks for t in self.tenants)


def last_known(items: Iterable[Item], last_end: float | None) -> float:
    """The last moment the checkpoint knows of: the latest time it recorded (``last_end``: when
    the last run ended, if one did)."""
    times = [] if last_end is None else [last_end]
    for item in items:
        times.extend(t for t in (item.submitted_at, item.finished_at, item.unknown_since) if t)
    return max(times, default=0.0)


def build_timeline(
    items: Sequence[Item], known_until: float, attempts: Iterable[Attempt] = ()
) -> Timeline:
    """Bars per tenant, each in the first lane free at its start."""
    by_tenant: dict[str, Lanes] = {}
    no_times = 0
    by_key = {item.key: item for item in items}
    for attempt in attempts:
        owner = by_key.get(attempt.key)
        if owner is not None:
            lanes = by_tenant.setdefault(owner.row.tenant, Lanes(owner.row.tenant))
            lanes.bars.append(Bar(owner, attempt.start, attempt.end, -1, False, attempt))
    for item in sorted(items, key=lambda i: (i.submitted_at or i.unknown_since or 0.0, i.key)):
        lanes = by_tenant.setdefault(item.row.tenant, Lanes(item.row.tenant))
        start = item.submitted_at or (item.unknown_since if item.phase.holds_slot else None)
        if item.phase.holds_slot and start is not None:
            lanes.bars.append(Bar(item, start, max(start, known_until), -1, open_end=True))
        elif item.phase.is_terminal and start is not None and item.finished_at is not None:
            lanes.bars.append(Bar(item, start, item.finished_at, -1, open_end=False))
        elif item.phase.is_terminal and item.finished_at is not None:
            lanes.marks.append(Mark(item, item.finished_at))
        elif item.phase.public in (PublicState.SUCCEEDED, PublicState.RUNNING):
            no_times += 1
    for lanes in by_tenant.values():
        lanes.bars = _assign_lanes(lanes.bars)
    moments = [t for lanes in by_tenant.values() for b in lanes.bars for t in (b.start, b.end)]
    moments += [m.at for lanes in by_tenant.values() for m in lanes.marks]
    tenants = [
        by_tenant[name]
        for name in sorted(by_tenant)
        if by_tenant[name].bars or by_tenant[name].marks
    ]
    return Timeline(tenants, min(moments, default=0.0), max(moments, default=0.0), no_times)


def _assign_lanes(bars: Iterable[Bar]) -> list[Bar]:
    """Each bar in the first lane that is free at its start (interval partitioning)."""
    free_at: list[float] = []
    placed = []
    for bar in sorted(bars, key=lambda b: (b.start, b.end)):
        lane = next((i for i, t in enumerate(free_at) if t <= bar.start), len(free_at))
        if lane == len(free_at):
            free_at.append(bar.end)
        free_at[lane] = bar.end
        placed.append(replace(bar, lane=lane))
    return placed
