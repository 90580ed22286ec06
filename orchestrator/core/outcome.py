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


def merge_list(
    existing: Mapping[str, Item],
    rows: Sequence[Row],
    rejected: Sequence[tuple[Row, str]] = (),
) -> list[Item]:
    """The items of a run: the checkpoint's, updated by the list as it is now.

    New rows join as pending; rows no longer listed stay tracked (``listed=False``); an edited
    row replaces the old one while nothing is in flight for it (a rejected one is judged again).
    A line the list's checks refused (``rejected``: its row and why) is a ``rejected`` item, so
    that every data line has one report row; when its key is taken by an item that went further
    (in flight or done), it gets a key of its own and the old item is no longer listed. A row
    with a key of its own is not shown once its line is gone (:func:`is_shown`).
    """
    refused = _merge_rejected(existing, rejected)
    merged = {row.key: _merge_row(existing.get(row.key), row) for row in rows}
    if refused:  # in the list's order, as a resumed run recalls them
        merged = dict(sorted({**merged, **refused}.items(), key=lambda pair: pair[1].row.line))
    for key, old in existing.items():
        if key not in merged:
            merged[key] = replace(old, listed=False)
    return list(merged.values())


def _merge_row(old: Item | None, row: Row) -> Item:
    """The item of a valid row, given the checkpoint's (``old``, if any)."""
    if old is None:
        return Item(row=row)
    if old.row == row and old.listed:
        return old  # the usual case on resume: nothing to rebuild
    if old.row.problem and old.phase == Phase.REJECTED:  # the list refused it, no more
        return replace(old, row=row, listed=True).new_attempt(
            "row fixed", copy_name=None, size_bytes=None
        )
    if old.row.digest() == row.digest():
        return replace(old, row=row, listed=True)
    if old.phase == Phase.PENDING:
        return replace(old, row=row, listed=True, copy_name=None, size_bytes=None)
    if old.phase == Phase.REJECTED:
        return replace(old, row=row, listed=True).new_attempt(
            "row edited", copy_name=None, size_bytes=None
        )
    return replace(old, listed=True)


def _merge_rejected(
    existing: Mapping[str, Item], rejected: Sequence[tuple[Row, str]]
) -> dict[str, Item]:
    merged: dict[str, Item] = {}
    for bad, why in rejected:
        row = replace(bad, problem=why)
        old = existing.get(row.key)
        if old is not None and old.phase not in (Phase.PENDING, Phase.REJECTED):
            row = replace(row, line_tag=f"#line{row.line}")
            old = existing.get(row.key)
        if old is None or old.phase not in (Phase.PENDING, Phase.REJECTED):
            merged[row.key] = Item(row=row, phase=Phase.REJECTED, detail=why)
            continue
        merged[row.key] = replace(
            old,
            row=row,
            phase=Phase.REJECTED,
            detail=why,
            listed=True,
            copy_name=None,
            error_code=None,
            error_message=None,
        )
    return merged


def is_shown(item: Item) -> bool:
    """Whether the views show this item: all but a rejected line with a key of its own
    (``Row.line_tag``) that left the list -- it never reached the cloud, and its key names
    a line number that no longer means anything."""
    return item.listed or not item.row.line_tag


def is_done(item: Item) -> bool:
    """Nothing left to do for this item: terminal, or pending and no longer listed."""
    return item.phase.is_terminal or (not item.listed and item.phase == Phase.PENDING)


def needs_look(item: Item) -> bool:
    """Copied, but the copy differs from its source or a step after it was not done."""
    return item.verify == "mismatch" or bool(item.undone)


def copy_requests(item: Item) -> int:
    """The copy requests made for ``item``, as the views count its attempts. ``Item.attempt``
    numbers the attempts (the stored value, never lowered: resume depends on it); a pending or
    rejected item's current attempt sent nothing, and an item never submitted (no
    ``submitted_at``: a rejected row, a blocked tenant's row) sent nothing at all."""
    if item.phase in (Phase.PENDING, Phase.REJECTED):
        return item.attempt - 1 if item.submitted_at is not None else 0
    return item.attempt


def to_look_at(items: Iterable[Item]) -> list[Item]:
    """The listed items copied but to look at (:func:`needs_look`): the run's exit 1 counts
    them, ``status`` names them."""
    return [i for i in items if i.listed and i.phase == Phase.SUCCEEDED and needs_look(i)]


def look_text(item: Item) -> str:
    """What to look at in a copy: the fields that differ, then what was not done and why."""
    parts = [f"verify mismatch: {item.mismatch}"] if item.verify == "mismatch" else []
    if item.undone:
        parts.append(item.undone)
    return "; ".join(parts)


def is_finished(items: Iterable[Item]) -> bool:
    """Nothing left to do: every listed item terminal, nothing in flight for unlisted ones."""
    return all(map(is_done, items))


@dataclass(frozen=True)
class Outcome:
    """How a run ended, defined once: its exit code, the reason (every thing not done, the most
    severe deciding the code) and the advice (only the actions that apply). The meta stores
    code and reason; the terminal, ``status``, the reports and the metrics show them."""

    code: ExitCode
    reason: str
    advice: str


def outcome_of(
    items: Sequence[Item],
    *,
    blocked: Collection[str],
    quota_full: Collection[tuple[str, str]],
    stop: Stop | None,
    unavailable: Mapping[str, str],
    blocked_for_run: Collection[str] = (),
) -> Outcome:
    """The outcome of a run from its items and what the run learned: ``blocked`` tenants (of
    them, ``blocked_for_run`` by a refusal that is not remembered: a permission, the clock, a
    token), ``quota_full`` (tenant, target region) pairs, why it stopped early (None: it did
    not) and the tenants ``unavailable`` (tenant -> outage message)."""
    held = dict.fromkeys(blocked, 0)
    full = dict.fromkeys(quota_full, 0)
    counts, left = _tally(items, held, full)
    threshold = stop.text if stop and stop.reason is StopReason.FAILURE_THRESHOLD else ""
    reasons, advice = _attention(counts, held, full, threshold, set(blocked_for_run))
    attention = bool(reasons)
    down = ", ".join(f"{t}: {m}" for t, m in sorted(unavailable.items()))
    if down:
        reasons.append(f"tenant(s) unavailable: {down}")
    if left:
        why = "" if stop is None or threshold else stop.text
        reasons.append(f"work left: {left} item(s) not done" + (f" ({why})" if why else ""))
    if left or down:
        advice.append(
            "run the same command again later: it resumes where this run stopped and follows "
            "the copies still running in the cloud"
        )
    if not reasons:
        return Outcome(ExitCode.OK, "every item succeeded", "nothing left to do")
    code = ExitCode.ATTENTION if attention else ExitCode.LATER if left else ExitCode.OK
    return Outcome(code, "; ".join(reasons), "; ".join(advice))


def _tally(
    items: Iterable[Item], held: dict[str, int], full: dict[tuple[str, str], int]
) -> tuple[dict[Phase, int], int]:
    """One pass over the items (100,000 at the end of a stopped run): the listed ones failed,
    rejected, and succeeded but to look at (:func:`to_look_at`), by phase; the ones not done
    (:func:`is_done`) counted in ``held`` (a blocked tenant's), in ``full`` (pending for a
    full target quota), or else in the number returned."""
    counts = {Phase.FAILED: 0, Phase.REJECTED: 0, Phase.SUCCEEDED: 0}
    left = 0
    terminal = {phase: phase.is_terminal for phase in Phase}
    for item in items:
        phase = item.phase
        if item.listed:
            if phase in counts and (phase is not Phase.SUCCEEDED or needs_look(item)):
                counts[phase] += 1
        elif phase is Phase.PENDING:
            continue  # done: no longer listed
        if terminal[phase]:
            continue
        row = item.row
        if row.tenant in held:
            held[row.tenant] += 1
        elif phase is Phase.PENDING and (row.tenant, row.target_region) in full:
            full[(row.tenant, row.target_region)] += 1
        else:
            left += 1
    return counts, left


def _attention(
    counts: Mapping[Phase, int],
    held: Mapping[str, int],
    full: Mapping[tuple[str, str], int],
    threshold: str,
    for_run: Collection[str] = (),
) -> tuple[list[str], list[str]]:
    """What needs a look (reasons) and what to do about each (advice). ``counts``: the listed
    items failed, rejected, and succeeded but to look at (:func:`to_look_at`);
    ``threshold``: the words of a failure-threshold stop, or ``""``."""
    failed = counts[Phase.FAILED]
    rejected = counts[Phase.REJECTED]
    reasons: list[str] = []
    advice: list[str] = []
    if failed:
        reasons.append(f"{failed} failed")
        advice.append(f"`run --retry-failed` gives the {failed} failed item(s) a new attempt")
    look = counts[Phase.SUCCEEDED]
    if look:
        reasons.append(f"{look} copied but to look at (verify mismatch or a step not done)")
        advice.append(
            "the report's verify, mismatch and notes columns say what differs or was not done"
        )
    if rejected:
        reasons.append(f"{rejected} rejected")
        advice.append(
            "fix the rejected rows (report.csv names each one's line and why), then run again"
        )
    if held:
        names = ", ".join(t + (f" ({n} not started)" if n else "") for t, n in sorted(held.items()))
        reasons.append(f"blocked tenant(s): {names}")
        keys = sorted(t for t in held if t not in for_run)
        others = sorted(t for t in held if t in for_run)
        if keys:
            advice.append(
                "fix the credentials of tenant(s) "
                + ", ".join(keys)
                + " (the refused key is not used again until it changes), then run again"
            )
        if others:
            advice.append(
                "fix what the refusal names for tenant(s) "
                + ", ".join(others)
                + " (grant the permission, set the clock, or refresh the token), then run"
                " again: the next run asks again"
            )
    if full:
        pairs = ", ".join(f"{t}/{r}" for t, r in sorted(full))
        counted = ", ".join(
            f"{t}/{r}" + (f" ({n} not started)" if n else "") for (t, r), n in sorted(full.items())
        )
        reasons.append(f"target quota full: {counted}")
        advice.append(f"raise the private-image quota ({pairs}) or delete unneeded images there")
    if threshold:
        reasons.append(threshold)
        advice.append("look at the failures before running again")
    return reasons, advice


def exit_code_for(
    items: Sequence[Item],
    *,
    blocked: Collection[str],
    quota_full: Collection[tuple[str, str]],
    stop: Stop | None,
    unavailable: Mapping[str, str],
) -> tuple[ExitCode, str]:
    """The exit code of a run and its reason (see :func:`outcome_of`)."""
    found = outcome_of(
        items,
        blocked=blocked,
        quota_full=quota_full,
        stop=stop,
        unavailable=unavailable,
    )
    return found.code, found.reason
