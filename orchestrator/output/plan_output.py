"""A plan as the user asked for it: a table for people, CSV or JSON for scripts. Pure values.

The rich renderables are drawn by the CLI (the only module that prints).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.commands.verdicts import VERDICTS, Plan, PlanRow, Verdict
from orchestrator.core.estimate import format_duration
from orchestrator.core.units import GIB

PLAN_COLUMNS = (
    "line",
    "tenant",
    "image_id",
    "source_region",
    "target_region",
    "name",
    "size_bytes",
    "verdict",
    "code",
    "reason",
    "expected_seconds",
)
STYLE = {
    Verdict.COPY: "green",
    Verdict.PRESENT: "cyan",
    Verdict.DONE: "cyan",
    Verdict.IN_FLIGHT: "blue",
    Verdict.REJECTED: "yellow",
    Verdict.FAILED: "red",
    Verdict.BLOCKED: "red",
    Verdict.UNCHECKED: "red",
}


def _gib(size: int | None) -> str:
    return "" if size is None else f"{size / GIB:.1f}"


def row_record(row: PlanRow) -> dict[str, Any]:
    notes = "; ".join(row.notes)
    return {
        "line": row.line,
        "tenant": row.tenant or None,
        "image_id": row.image_id or None,
        "source_region": row.source_region or None,
        "target_region": row.target_region or None,
        "name": row.name or None,
        "size_bytes": row.size_bytes,
        "verdict": row.verdict.value,
        "code": row.code or None,
        "reason": "; ".join(part for part in (row.reason, notes) if part) or None,
        "expected_seconds": None if row.expected_seconds is None else round(row.expected_seconds),
    }


def render_plan_csv(plan: Plan) -> str:
    """One line per row of the list, with ``PLAN_COLUMNS``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PLAN_COLUMNS)
    for row in plan.rows:
        record = row_record(row)
        writer.writerow("" if record[c] is None else record[c] for c in PLAN_COLUMNS)
    return out.getvalue()


def plan_document(plan: Plan) -> dict[str, Any]:
    """Everything in the plan, JSON-able."""
    speed = plan.speed
    return {
        "list": str(plan.list_path),
        "state_dir": str(plan.state_dir),
        "can_go": plan.can_go,
        "counts": plan.counts(),
        "by_tenant": plan.by("tenant"),
        "by_target_region": plan.by("target_region"),
        "tenants": dict(plan.tenant_notes),
        "quotas": [
            {
                "tenant": q.tenant,
                "region": q.region,
                "project": q.project,
                "adds": q.adds,
                "used": q.used,
                "quota": q.quota,
                "enough": q.enough,
                "error": q.error or None,
            }
            for q in plan.quotas
        ],
        "estimate": {
            "seconds": round(plan.seconds),
            "slots_per_account": plan.slots,
            "speed": {
                "fixed_seconds": round(speed.fixed_seconds, 3),
                "seconds_per_gib": round(speed.seconds_per_gib, 3),
                "assumed": speed.assumed,
                "learned_from": speed.learned_from,
                "text": speed.describe(),
            },
            "accounts": [
                {
                    "tenants": list(a.tenants),
                    "copies": a.copies,
                    "size_bytes": a.size_bytes,
                    "seconds": round(a.seconds),
                    "floor_seconds": round(a.floor_seconds),
                }
                for a in plan.accounts
            ],
        },
        "not_listed": plan.not_listed,
        "rows": [row_record(row) for row in plan.rows],
    }


def render_plan_json(plan: Plan) -> str:
    return json.dumps(plan_document(plan), indent=2, ensure_ascii=False) + "\n"


# -- for people ----------------------------------------------------------------------------------


def _rows_table(rows: Iterable[PlanRow]) -> Table:
    table = Table(title="Rows", title_justify="left", expand=False)
    table.add_column("line", justify="right")
    table.add_column("tenant")
    table.add_column("image")
    table.add_column("from → to", no_wrap=True)
    table.add_column("GiB", justify="right")
    table.add_column("verdict", no_wrap=True)
    table.add_column("why", overflow="fold")
    for row in rows:
        record = row_record(row)
        route = f"{row.source_region} → {row.target_region}" if row.target_region else ""
        table.add_row(  # Text, not str: "[limits]" in a reason is not rich markup
            str(row.line),
            Text(row.tenant),
            Text(row.image_id),
            route,
            _gib(row.size_bytes),
            Text(row.verdict.value, style=STYLE[row.verdict]),
            Text(record["reason"] or ""),
        )
    return table


def _summary_table(title: str, groups: dict[str, dict[str, int]]) -> Table:
    shown = [v for v in VERDICTS if any(c[v.value] for c in groups.values())]
    table = Table(title=title, title_justify="left")
    table.add_column(title.split()[-1])
    for verdict in shown:
        table.add_column(verdict.value, justify="right")
    table.add_column("GiB to copy", justify="right")
    for name, counts in groups.items():
        table.add_row(
            Text(name), *(str(counts[v.value]) for v in shown), _gib(counts.get("copy_bytes", 0))
        )
    return table


def _quota_table(plan: Plan) -> Table:
    table = Table(title="Target quotas (private images)", title_justify="left")
    for column in ("tenant", "region", "project", "used / quota", "the list adds", "fits"):
        table.add_column(column, justify="right" if column == "the list adds" else "left")
    for q in plan.quotas:
        if q.enough is None:
            fits = Text(f"unknown: {q.error}", style="yellow")
        elif q.enough:
            fits = Text(f"yes ({q.free} free)", style="green")
        else:
            fits = Text(
                f"NO: {q.free} free; raise the quota or delete unused images", style="red bold"
            )
        used = f"{q.used} / {q.quota}" if q.quota is not None else "?"
        table.add_row(Text(q.tenant), q.region, Text(q.project), used, str(q.adds), fits)
    return table


def plan_renderables(plan: Plan) -> list[RenderableType]:
    """The rows, the summaries, the quotas and the estimate, for a terminal or a file."""
    parts: list[RenderableType] = [
        Text(f"Plan for {plan.list_path} (read-only: nothing was copied)", style="bold"),
        _rows_table(plan.rows),
        _summary_table("By tenant", plan.by("tenant")),
        _summary_table("By target region", plan.by("target_region")),
    ]
    if plan.quotas:
        parts.append(_quota_table(plan))
    for tenant, note in sorted(plan.tenant_notes.items()):
        parts.append(Text(f"tenant {tenant}: {note}", style="red"))
    parts.append(_estimate_text(plan))
    counts = plan.counts()
    go = sum(counts[v.value] for v in VERDICTS if v.can_go)
    cannot = len(plan.rows) - go
    verdict = f"{go} of {len(plan.rows)} rows can go"
    if cannot:
        verdict += f"; {cannot} cannot (see 'why' above)"
    if plan.quota_short:
        verdict += "; a target quota is too small"
    if plan.not_listed:
        verdict += f"; {plan.not_listed} item(s) of the checkpoint are no longer listed"
    parts.append(Text(verdict, style="bold green" if plan.can_go else "bold red"))
    return parts


def _estimate_text(plan: Plan) -> RenderableType:
    lines = [Text("Estimate", style="bold")]
    lines.extend(
        Text(
            f"  {'+'.join(account.tenants)}: {account.copies} copies, "
            f"{account.size_bytes / GIB:.0f} GiB, about {format_duration(account.seconds)} "
            f"with {plan.slots} copies at a time (no order beats "
            f"{format_duration(account.floor_seconds)})"
        )
        for account in plan.accounts
    )
    if plan.accounts:
        lines.append(
            Text(
                f"  whole list: about {format_duration(plan.seconds)} (accounts copy side by side)",
                style="bold",
            )
        )
    else:
        lines.append(Text("  nothing to copy"))
    lines.append(Text(f"  copy speed: {plan.speed.describe()}"))
    return Group(*lines)
