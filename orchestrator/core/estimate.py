"""How long copies take: the speed of one copy, and a list's copies packed into the slots.

Pure values. Before any copy has finished, the speed is an assumption
(:data:`ASSUMED_FIXED_SECONDS`, :data:`ASSUMED_SECONDS_PER_GIB`, kept here and nowhere else);
a checkpoint's finished copies (``meta.speed_samples``, fitted by
:class:`~orchestrator.core.speed.SpeedModel`) replace it.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.core.model import Item
from orchestrator.core.order import queue_order
from orchestrator.core.speed import SpeedModel
from orchestrator.core.units import GIB

# Assumed duration of one copy before any has finished: a fixed part plus a part per GiB.
# IMS publishes no copy speed: these are assumptions, replaced by what finished copies show.
ASSUMED_FIXED_SECONDS = 300.0
ASSUMED_SECONDS_PER_GIB = 30.0


@dataclass(frozen=True)
class Speed:
    """Duration of one copy: ``fixed_seconds + GiB x seconds_per_gib``."""

    fixed_seconds: float
    seconds_per_gib: float
    learned_from: int = 0  # finished copies behind the figures; 0: the assumed defaults

    @property
    def assumed(self) -> bool:
        return self.learned_from == 0

    def duration(self, size_bytes: int | None) -> float:
        return self.fixed_seconds + (size_bytes or 0) / GIB * self.seconds_per_gib

    def describe(self) -> str:
        figures = f"{self.seconds_per_gib:.3g} s per GiB + {self.fixed_seconds:.3g} s per copy"
        if self.assumed:
            return (
                f"{figures}: ASSUMED (no finished copies to learn from yet; the estimate "
                "improves once a run has finished some)"
            )
        return f"{figures}: learned from {self.learned_from} finished copies in the checkpoint"


def speed_from_samples(samples: Iterable[Sequence[float]]) -> Speed:
    """The speed the checkpoint's finished copies show, or the assumed one."""
    model = SpeedModel(samples=[(float(s[0]), float(s[1])) for s in samples])
    fitted = model.fit()
    if fitted is None:
        return Speed(ASSUMED_FIXED_SECONDS, ASSUMED_SECONDS_PER_GIB)
    fixed, per_gib = fitted
    return Speed(fixed, per_gib, learned_from=len(model.samples))


def makespan(durations: Sequence[float], slots: int, busy: Sequence[float] = ()) -> float:
    """When the last copy ends if each starts in the first free slot, in the order given.

    ``busy`` are the remaining seconds of copies already holding a slot.
    """
    heap = sorted(busy) + [0.0] * max(0, slots - len(busy))
    heapq.heapify(heap)
    for duration in durations:
        heapq.heappush(heap, heapq.heappop(heap) + duration)
    return max(heap, default=0.0)


@dataclass(frozen=True)
class AccountEstimate:
    """One cloud account (tenants sharing an IAM domain share its slots)."""

    tenants: tuple[str, ...]
    copies: int
    size_bytes: int
    seconds: float  # the copies packed into the slots, in the run's order
    floor_seconds: float  # no schedule beats max(total / slots, longest)


def estimate(
    to_copy: Sequence[Item],
    in_flight: Sequence[Item],
    account_of: Mapping[str, str],
    speed: Speed,
    slots: int,
    now: float,
) -> list[AccountEstimate]:
    """Per account (tenants sharing one share its slots): the copies still to make, packed into
    the slots in the run's order after the ones in flight finish their remaining time."""
    groups: dict[str, tuple[list[Item], list[Item]]] = defaultdict(lambda: ([], []))
    for index, items in enumerate((to_copy, in_flight)):
        for item in items:
            groups[account_of.get(item.row.tenant, item.row.tenant)][index].append(item)
    out = []
    for copies, running in groups.values():
        busy = [
            max(0.0, speed.duration(i.size_bytes) - (now - (i.submitted_at or now)))
            for i in running
        ]
        durations = [speed.duration(i.size_bytes) for i in sorted(copies, key=queue_order)]
        every = durations + busy
        out.append(
            AccountEstimate(
                tenants=tuple(sorted({i.row.tenant for i in copies + running})),
                copies=len(copies),
                size_bytes=sum(i.size_bytes or 0 for i in copies),
                seconds=makespan(durations, slots, busy),
                floor_seconds=max(sum(every) / slots, max(every, default=0.0)),
            )
        )
    return sorted(out, key=lambda a: a.tenants)


def format_duration(seconds: float) -> str:
    """``45s``, ``12m30s``, ``3h05m``, ``2d04h``: short and unambiguous."""
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
