"""What a run is made of and how it ended: the list merged into the checkpoint, and the exit
code with its reason. Pure: the engine and ``plan`` both use it, neither needs the other.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Item, Phase, Row


class StopReason(StrEnum):
    """Why a run stopped submitting before its list was done."""

    SIGNAL = "signal"  # SIGINT/SIGTERM: run again later
    DEADLINE = "deadline"  # --deadline reached: run again later
    FAILURE_THRESHOLD = "failure threshold"  # --max-failures reached: someone must look


@dataclass(frozen=True)
class Stop:
    """A stop: its reason, and the words that say it (in events.jsonl and the exit reason)."""

    reason: StopReason
    text: str

    @staticmethod
    def signal(name: str) -> Stop:
        return Stop(StopReason.SIGNAL, f"signal {name}")

    @staticmethod
    def deadline() -> Stop:
        return Stop(StopReason.DEADLINE, "run deadline reached")

    @staticmethod
    def failure_threshold(failed: int) -> Stop:
        return Stop(StopReason.FAILURE_THRESHOLD, f"failure threshold reached ({failed} failed)")


def merge_list(existing: Mapping[str, Item], rows: Sequence[Row]) -> list[Item]:
    """The items of a run: the checkpoint's, updated by the list as it is now.

    New rows join as pending; rows no longer listed stay tracked (``listed=False``); an edited
    row replaces the old one while nothing is in flight for it (a rejected one is judged again).
    """
    merged: dict[str, Item] = {}
    for row in rows:
        key = row.key
        old = existing.get(key)
        if old is None:
            merged[key] = Item(row=row)
        elif old.row == row and old.listed:
            merged[key] = old  # the usual case on resume: nothing to rebuild
        elif old.row.digest() == row.digest():
            merged[key] = replace(old, row=row, listed=True)
        elif old.phase == Phase.PENDING:
            merged[key] = replace(old, row=row, listed=True, copy_name=None, size_bytes=None)
        elif old.phase == Phase.REJECTED:
            merged[key] = replace(old, row=row, listed=True).new_attempt(
                "row edited", copy_name=None, size_bytes=None
            )
        else:
            merged[key] = replace(old, listed=True)
    for key, old in existing.items():
        if key not in merged:
            merged[key] = replace(old, listed=False)
    return list(merged.values())


def is_done(item: Item) -> bool:
    """Nothing left to do for this item: terminal, or pending and no longer listed."""
    return item.phase.is_terminal or (not item.listed and item.phase == Phase.PENDING)


def is_finished(items: Iterable[Item]) -> bool:
    """Nothing left to do: every listed item terminal, nothing in flight for unlisted ones."""
    return all(map(is_done, items))


def exit_code_for(
    items: Sequence[Item],
    *,
    blocked: Collection[str],
    quota_full: Collection[tuple[str, str]],
    stop: Stop | None,
    unavailable: Mapping[str, str],
) -> tuple[ExitCode, str]:
    """The exit code of a run and its reason, from its items and what the run learned:
    ``blocked`` tenants, ``quota_full`` (tenant, target region) pairs, why it stopped early
    (None: it did not) and the tenants ``unavailable`` (tenant -> outage message)."""
    listed = [item for item in items if item.listed]
    failed = sum(item.phase == Phase.FAILED for item in listed)
    rejected = sum(item.phase == Phase.REJECTED for item in listed)
    reasons = []
    if failed:
        reasons.append(f"{failed} failed")
    if rejected:
        reasons.append(f"{rejected} rejected")
    if blocked:
        reasons.append("blocked tenant(s): " + ", ".join(sorted(blocked)))
    if quota_full:
        reasons.append("target quota full: " + ", ".join(f"{t}/{r}" for t, r in quota_full))
    if stop is not None and stop.reason is StopReason.FAILURE_THRESHOLD:
        reasons.append(stop.text)
    if reasons:
        return ExitCode.ATTENTION, "; ".join(reasons)
    if not is_finished(items):
        outages = ", ".join(f"{t}: {m}" for t, m in sorted(unavailable.items()))
        why = (stop.text if stop else "") or outages
        return ExitCode.LATER, f"work left ({why or 'run again'})"
    return ExitCode.OK, "every item succeeded"
