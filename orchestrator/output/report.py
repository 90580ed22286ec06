"""Reports: items -> CSV, JSON and Markdown, and the summary ``status`` shows. Pure values.

One record per item, in the order given, with the columns of ``REPORT_COLUMNS`` (design §7).
Times are ISO 8601 UTC with ``Z``; ``state`` is the coarse public state and ``detail`` the finer
one. Nothing secret is on an ``Item``, so nothing secret can reach a report.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from orchestrator.core.aftercopy import join_notes
from orchestrator.core.model import Item, Phase, PublicState
from orchestrator.core.outcome import copy_requests, needs_look

REPORT_COLUMNS = (
    "tenant",
    "image_id",
    "source_region",
    "target_region",
    "name",
    "state",
    "detail",
    "job_id",
    "target_image_id",
    "attempts",
    "submitted_at",
    "finished_at",
    "error_code",
    "error_message",
    "line",  # the row's line in the list file (added last: scripts may read by position)
    "verify",
    "mismatch",
    "carried",
    "notes",
)
STATES = tuple(PublicState)  # pending, running, succeeded, failed, rejected: the column order
NOT_LISTED = "no longer listed"

Value = str | int | None


def format_time(timestamp: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC (``2026-03-27T01:17:50Z``); None stays None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def item_detail(item: Item) -> str:
    """The finer state, plus ``no longer listed`` for an item whose row left the list."""
    parts = [item.detail] if item.detail else []
    if not item.listed:
        parts.append(NOT_LISTED)
    return "; ".join(parts)


class Refusal(Protocol):
    """Why a tenant is blocked (``state.meta.BlockedKey``): what the cloud answered."""

    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...


def explained(items: Iterable[Item], blocked: Mapping[str, Refusal]) -> list[Item]:
    """The items as the views show them: an item a blocked tenant holds back says so (the
    refusal and what to fix) instead of a bare ``pending``. For display only, never stored."""
    if not blocked:
        return list(items)
    out = []
    for item in items:
        why = blocked.get(item.row.tenant)
        if why is not None and item.listed and item.phase == Phase.PENDING:
            item = replace(
                item,
                detail=f"blocked: the credentials of tenant {item.row.tenant} were refused "
                f"({why.code}: {why.message}); fix them, then run again",
                error_code=item.error_code or why.code,
                error_message=item.error_message or why.message,
            )
        out.append(item)
    return out


def item_record(item: Item) -> dict[str, Value]:
    """One report record: ``REPORT_COLUMNS`` in order, absent values as None."""
    row = item.row
    return {
        "tenant": row.tenant,
        "image_id": row.image_id,
        "source_region": row.source_region,
        "target_region": row.target_region,
        "name": item.copy_name or row.name,
        "state": item.phase.public,
        "detail": item_detail(item) or None,
        "job_id": item.job_id,
        "target_image_id": item.target_image_id,
        "attempts": copy_requests(item),
        "submitted_at": format_time(item.submitted_at),
        "finished_at": format_time(item.finished_at),
        "error_code": item.error_code,
        "error_message": item.error_message,
        "line": row.line,
        "verify": item.verify or None,
        "mismatch": item.mismatch or None,
        "carried": item.carried or None,
        "notes": item_notes(item) or None,
    }


def item_notes(item: Item) -> str:
    """What was not done after the copy (and why), then what to know, in one text."""
    return join_notes(item.undone, item.notes)


@dataclass(frozen=True)
class Summary:
    """Counts by public state, overall, per tenant and per target region."""

    total: int
    by_state: Mapping[PublicState, int]
    by_tenant: Mapping[str, Mapping[PublicState, int]]
    by_target_region: Mapping[str, Mapping[PublicState, int]]
    in_flight: Mapping[str, int]  # per tenant: items that may hold a copy slot in the cloud
    not_listed: int

    @property
    def finished(self) -> bool:
        """Every item is in a terminal state (succeeded, failed or rejected)."""
        return self.by_state[PublicState.PENDING] == 0 and self.by_state[PublicState.RUNNING] == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "finished": self.finished,
            "by_state": dict(self.by_state),
            "by_tenant": {name: dict(counts) for name, counts in self.by_tenant.items()},
            "by_target_region": {
                name: dict(counts) for name, counts in self.by_target_region.items()
            },
            "in_flight": dict(self.in_flight),
            "not_listed": self.not_listed,
        }


def _zero() -> dict[PublicState, int]:
    return dict.fromkeys(STATES, 0)


def summarize(items: Iterable[Item]) -> Summary:
    """Count the items by public state, by tenant and by target region."""
    total = 0
    not_listed = 0
    by_state = _zero()
    by_tenant: dict[str, dict[PublicState, int]] = {}
    by_region: dict[str, dict[PublicState, int]] = {}
    in_flight: dict[str, int] = {}
    kinds = {phase: (phase.public, phase.holds_slot) for phase in Phase}  # 100,000 look-ups
    for item in items:
        state, holds = kinds[item.phase]
        tenant = item.row.tenant
        total += 1
        not_listed += not item.listed
        by_state[state] += 1
        counts = by_tenant.get(tenant)
        if counts is None:
            counts = by_tenant[tenant] = _zero()
        counts[state] += 1
        counts = by_region.get(item.row.target_region)
        if counts is None:
            counts = by_region[item.row.target_region] = _zero()
        counts[state] += 1
        in_flight[tenant] = in_flight.get(tenant, 0) + holds
    return Summary(
        total=total,
        by_state=by_state,
        by_tenant=dict(sorted(by_tenant.items())),
        by_target_region=dict(sorted(by_region.items())),
        in_flight=dict(sorted(in_flight.items())),
        not_listed=not_listed,
    )


CSV_PART = 2000  # report lines per part of csv_parts


def render_csv(items: Iterable[Item]) -> str:
    """The CSV report: a header of ``REPORT_COLUMNS``, then one line per item."""
    return b"".join(csv_parts(items)).decode()


def csv_parts(items: Iterable[Item]) -> Iterator[bytes]:
    """:func:`render_csv`'s text in parts of ``CSV_PART`` lines, UTF-8 (the cells of
    :func:`item_record`, built straight into a line: 100,000 items at the end of a stopped run
    must cost well under a second, and the report is never whole in memory).

    A line whose cells need no quoting (no comma, quote or line break in any: what the csv
    module would write as the cells joined by commas) is joined here; any other goes through
    the csv module (``csv.writer``'s own words). The csv module alone took 1.2 s for 100,000
    lines, the join takes a fifth of that."""
    quoting = io.StringIO()
    writer = csv.writer(quoting, lineterminator="\n")

    def quoted(cells: Iterable[str]) -> str:
        quoting.seek(0)
        quoting.truncate()
        writer.writerow(cells)
        return quoting.getvalue()

    public = {phase: phase.public.value for phase in Phase}
    seconds: dict[int, str] = {}  # a whole second's text, shared by the items of that second

    def when(timestamp: float | None) -> str:
        if timestamp is None:
            return ""
        whole = int(timestamp)
        if whole != timestamp and timestamp - whole >= 0.999:  # may round up: say it exactly
            return format_time(timestamp) or ""
        text = seconds.get(whole)
        if text is None:
            text = seconds[whole] = format_time(whole) or ""
        return text

    commas = len(REPORT_COLUMNS) - 1
    lines = [quoted(REPORT_COLUMNS)]
    for count, item in enumerate(items, 1):
        row = item.row
        cells = (
            row.tenant,
            row.image_id,
            row.source_region,
            row.target_region,
            item.copy_name or row.name or "",
            public[item.phase],
            item.detail if item.listed else item_detail(item),
            item.job_id or "",
            item.target_image_id or "",
            str(copy_requests(item)),
            when(item.submitted_at),
            when(item.finished_at),
            item.error_code or "",
            item.error_message or "",
            str(row.line),
            item.verify,
            item.mismatch,
            item.carried,
            item_notes(item) if item.undone or item.notes else "",
        )
        line = ",".join(cells)
        if line.count(",") != commas or '"' in line or "\n" in line or "\r" in line:
            lines.append(quoted(cells))
        else:
            lines.append(line + "\n")
        if count % CSV_PART == 0:  # (the first part has the header too)
            yield "".join(lines).encode()
            lines.clear()
    if lines:
        yield "".join(lines).encode()


def render_json(items: Iterable[Item], summary: Summary) -> str:
    """``{"summary": {...}, "items": [...]}``, absent values as null."""
    records = []
    for item in items:
        record: dict[str, Value | bool] = dict(item_record(item))
        record["listed"] = item.listed
        records.append(record)
    document = {"summary": summary.to_dict(), "items": records}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# What the list's text could turn into markup in a table cell (inline content only: nothing at
# a cell's start begins a heading or a list). ``_`` and ``&`` are handled apart, where they act.
_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*[]|~"} | {"<": "&lt;", ">": "&gt;"})
_UNDERSCORES = re.compile(r"_+")
_REFERENCE = re.compile(r"&(?=#?[0-9A-Za-z]+;)")  # the start of ``&amp;``, ``&#60;``...


def visible(text: str) -> str:
    """``text`` with invisible format characters (a right-to-left override, say) as ``\\uXXXX``
    and control characters (but line breaks and tabs) as spaces: what a terminal may show."""
    return "".join(
        f"\\u{ord(c):04x}"
        if unicodedata.category(c) == "Cf"
        else " "
        if unicodedata.category(c) == "Cc" and c not in "\n\t"
        else c
        for c in text
    )


def _cell(value: Value) -> str:
    """A Markdown table cell: the list's text shown as text, never as markup or HTML, and
    escaped only where it would act, so that ``prod_eu`` or ``JOB_DEADLINE`` read as typed."""
    text = " ".join(("" if value is None else visible(str(value))).split())
    text = _REFERENCE.sub("&amp;", text).translate(_MARKDOWN)
    return _UNDERSCORES.sub(_underscores, text)


def _underscores(match: re.Match[str]) -> str:
    """A run of ``_`` between two letters or digits never starts or ends emphasis
    (CommonMark's intraword rule); any other is escaped."""
    text, start, end = match.string, match.start(), match.end()
    inside = start > 0 and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()
    return match[0] if inside else "\\_" * len(match[0])


def _table(header: Iterable[str], rows: Iterable[Iterable[Value]], numeric_from: int) -> list[str]:
    names = list(header)
    align = ["---" if index < numeric_from else "---:" for index in range(len(names))]
    lines = ["| " + " | ".join(names) + " |", "| " + " | ".join(align) + " |"]
    lines.extend("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)
    return lines


def _headline(summary: Summary) -> str:
    counts = ", ".join(f"{summary.by_state[state]} {state}" for state in STATES)
    noun = "item" if summary.total == 1 else "items"
    line = f"**{summary.total} {noun}**: {counts}"
    if summary.not_listed:
        line += f" ({summary.not_listed} {NOT_LISTED})"
    return line


def render_markdown(items: Iterable[Item], summary: Summary) -> str:
    """A summary table per tenant and per target region, every failure and rejection, then
    one row per item (the columns of the CSV report, ``line`` first)."""
    items = list(items)
    lines = ["# ims-migrate report", "", _headline(summary), "", "## By tenant", ""]
    lines += _table(
        ["tenant", "total", *STATES, "in flight"],
        (
            [tenant, sum(counts.values()), *counts.values(), summary.in_flight.get(tenant, 0)]
            for tenant, counts in summary.by_tenant.items()
        ),
        numeric_from=1,
    )
    lines += ["", "## By target region", ""]
    lines += _table(
        ["target region", "total", *STATES],
        (
            [region, sum(counts.values()), *counts.values()]
            for region, counts in summary.by_target_region.items()
        ),
        numeric_from=1,
    )
    lines += ["", "## Failures and rejections", ""]
    problems = [item_record(item) for item in items if item.phase.public.is_problem]
    if problems:
        lines += _table(
            ["tenant", "image_id", "source", "target", "name", "state", "attempts", "code", "why"],
            (
                [
                    record["tenant"],
                    record["image_id"],
                    record["source_region"],
                    record["target_region"],
                    record["name"],
                    record["state"],
                    record["attempts"],
                    record["error_code"],
                    record["error_message"] or record["detail"],
                ]
                for record in problems
            ),
            numeric_from=99,
        )
    else:
        lines.append("None.")
    look = [
        item_record(item) for item in items if item.phase == Phase.SUCCEEDED and needs_look(item)
    ]
    if look:
        lines += [
            "",
            "## Copied, to look at (verify mismatch, or a step after the copy not done)",
            "",
        ]
        lines += _table(
            ["tenant", "image_id", "target", "target_image_id", "verify", "what"],
            (
                [r["tenant"], r["image_id"], r["target_region"], r["target_image_id"],
                 r["verify"], look_text(r)]
                for r in look
            ),
            numeric_from=99,
        )  # fmt: skip
    lines += ["", "## Items", ""]
    lines += _table(
        ["line", *(c for c in REPORT_COLUMNS if c != "line")],
        (
            [record["line"], *(record[c] for c in REPORT_COLUMNS if c != "line")]
            for record in map(item_record, items)
        ),
        numeric_from=99,
    )
    return "\n".join(lines) + "\n"


def look_text(record: Mapping[str, Value]) -> Value:
    """Why a copied item is to look at: the fields that differ, then what was not done."""
    parts = [str(record[key]) for key in ("mismatch", "notes") if record[key]]
    return " | ".join(parts) or None
