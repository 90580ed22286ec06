"""The HTML report: one self-contained file to hand on (no script, no network, no asset).

It shows the summary, a timeline of each tenant's copy slots (which copy ran when, coloured
by outcome: an idle slot or a stuck copy is visible at a glance), the failures with their
codes and messages, and every item. Pure: items and the checkpoint's meta in, text out.

The timeline (``timeline.py``) is honest about what is known: a copy still in flight is drawn
open (dashed), an adopted copy whose start is unknown is a mark at its end, earlier attempts
(from events.jsonl) are grey, and items with no time at all are counted under the chart.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator.core.estimate import format_duration
from orchestrator.core.model import Item, Phase, PublicState
from orchestrator.core.outcome import needs_look
from orchestrator.output.report import (
    STATES,
    Summary,
    Value,
    format_time,
    item_record,
    look_text,
    summarize,
)
from orchestrator.output.timeline import Timeline, build_timeline, earlier_attempts, last_known
from orchestrator.state.meta import RunMeta

EARLIER = "earlier"  # the colour of an earlier attempt's bar
COLOURS: dict[str, str] = {
    PublicState.SUCCEEDED: "#2e7d32",
    PublicState.FAILED: "#c62828",
    PublicState.RUNNING: "#1565c0",
    "adopted": "#6a1b9a",
    PublicState.REJECTED: "#b26a00",
    PublicState.PENDING: "#757575",
    EARLIER: "#9e9e9e",
}
CHART_WIDTH = 1000
LABEL_WIDTH = 120
LANE_HEIGHT = 14
LANE_GAP = 3
GROUP_GAP = 16
AXIS_HEIGHT = 22
TICK_STEPS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip


# -- drawing -------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _clock(timestamp: float, with_date: bool) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%m-%d %H:%M" if with_date else "%H:%M:%S")


def _tooltip(item: Item, start: float | None, end: float | None, open_end: bool) -> str:
    row = item.row
    parts = [
        f"{row.image_id} ({item.copy_name or row.name or ''})",
        f"{row.source_region} -> {row.target_region}, {item.phase.public}"
        + (f" ({item.detail})" if item.detail else ""),
        f"start {format_time(start) or 'unknown'}",
        "end: none recorded (in flight at the last save)"
        if open_end
        else f"end {format_time(end) or 'unknown'}",
    ]
    if start is not None and end is not None and not open_end:
        parts.append(f"took {format_duration(end - start)}")
    if item.error_code or item.error_message:
        parts.append(f"{item.error_code or ''}: {item.error_message or ''}")
    return "\n".join(parts)


def render_timeline_svg(timeline: Timeline) -> str:
    """An inline SVG: a block of lanes per tenant over a shared time axis."""
    span = max(1.0, timeline.end - timeline.start)
    plot = CHART_WIDTH - LABEL_WIDTH - 36  # room for the last tick label

    def x(t: float) -> float:
        return round(LABEL_WIDTH + (t - timeline.start) / span * plot, 2)

    bands: list[str] = []
    body: list[str] = []
    y = AXIS_HEIGHT
    for lanes in timeline.tenants:
        rows = lanes.count + (1 if lanes.marks else 0)
        height = max(1, rows) * (LANE_HEIGHT + LANE_GAP)
        bands.append(
            f'<text class="tenant" x="4" y="{y + 11}">{_e(lanes.tenant)}</text>'
            f'<text class="sub" x="4" y="{y + 24}">{lanes.count} lane(s)</text>'
            f'<rect class="band" x="{LABEL_WIDTH}" y="{y - 1}" width="{plot}" height="{height}"/>'
        )
        for bar in lanes.bars:
            top = y + bar.lane * (LANE_HEIGHT + LANE_GAP)
            if bar.earlier is not None:
                outcome: str = EARLIER
                tip = (
                    f"{bar.item.row.image_id}: attempt {bar.earlier.number} of "
                    f"{bar.item.attempt}\n{format_time(bar.start)} to {format_time(bar.end)}"
                    f"\nended: {bar.earlier.outcome}"
                )
            else:
                outcome = PublicState.RUNNING if bar.open_end else bar.item.phase.public
                tip = _tooltip(bar.item, bar.start, bar.end, bar.open_end)
            width = max(1.5, x(bar.end) - x(bar.start))
            cls = f"bar {outcome}" + (" open" if bar.open_end else "")
            body.append(
                f'<rect class="{cls}" x="{x(bar.start)}" y="{top}" width="{width:.2f}" '
                f'height="{LANE_HEIGHT}" fill="{COLOURS[outcome]}"><title>{_e(tip)}</title></rect>'
            )
        if lanes.marks:
            top = y + lanes.count * (LANE_HEIGHT + LANE_GAP)
            body.append(
                f'<text class="sub" x="{LABEL_WIDTH - 4}" y="{top + 11}" '
                'text-anchor="end">start unknown</text>'
            )
            for mark in lanes.marks:
                cx, cy = x(mark.at), top + LANE_HEIGHT / 2
                colour = COLOURS[mark.item.phase.public]
                body.append(
                    f'<path class="mark" d="M{cx} {cy - 6} L{cx + 5} {cy} L{cx} {cy + 6} '
                    f'L{cx - 5} {cy} Z" fill="{colour}">'
                    f"<title>{_e(_tooltip(mark.item, None, mark.at, False))}</title></path>"
                )
        y += height + GROUP_GAP
    axis = _axis(timeline, x, y)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" '
        f'viewBox="0 0 {CHART_WIDTH} {y}" width="100%" '
        f'aria-label="copy slots of each tenant over time">{"".join(bands)}{axis}{"".join(body)}'
        "</svg>"
    )


def _axis(timeline: Timeline, x: Any, bottom: float) -> str:
    span = max(1.0, timeline.end - timeline.start)
    step = next((s for s in TICK_STEPS if span / s <= 10), TICK_STEPS[-1] * (span // 864000 + 1))
    first = (timeline.start // step + 1) * step
    with_date = span > 86400
    parts = []
    tick = first
    while tick <= timeline.end:
        parts.append(
            f'<line class="grid" x1="{x(tick)}" y1="{AXIS_HEIGHT - 6}" x2="{x(tick)}" '
            f'y2="{bottom - GROUP_GAP}"/><text class="tick" x="{x(tick)}" y="12" '
            f'text-anchor="middle">{_clock(tick, with_date)}</text>'
        )
        tick += step
    return "".join(parts)


# -- the page ------------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#555;margin:0 0 2px}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin:14px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:90px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin:0 4px 0 12px;
vertical-align:-1px}
.note{color:#555;font-size:13px;max-width:1000px}
svg.timeline{max-width:1000px;border:1px solid #eee;background:#fff}
svg text{font:11px system-ui,sans-serif;fill:#333}svg text.tenant{font-weight:600}
svg text.sub,svg text.tick{fill:#777;font-size:10px}
svg .grid{stroke:#e3e3e3;stroke-width:1}svg .band{fill:#fafafa}
svg .bar{stroke:#fff;stroke-width:1}svg .bar.open{stroke:#0d47a1;stroke-dasharray:3 2}
td.msg{max-width:520px;word-break:break-word}
details summary{cursor:pointer;font-weight:600;margin:18px 0 6px}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric: int = 99) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"n" if i >= numeric else "msg" if i == len(row) - 1 else ""}">'
            f"{_e(value)}</td>"
            for i, value in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary(summary: Summary) -> str:
    cards = [("items", summary.total)] + [(s, summary.by_state[s]) for s in STATES]
    html_cards = "".join(
        f'<div class="card" id="count-{_e(name)}"><b>{count}</b>{_e(name)}</div>'
        for name, count in cards
    )
    tenants = _table(
        ["tenant", "total", *STATES],
        ([t, sum(c.values()), *(c[s] for s in STATES)] for t, c in summary.by_tenant.items()),
        numeric=1,
    )
    regions = _table(
        ["target region", "total", *STATES],
        (
            [r, sum(c.values()), *(c[s] for s in STATES)]
            for r, c in summary.by_target_region.items()
        ),
        numeric=1,
    )
    return f'<div class="cards">{html_cards}</div><h2>By tenant</h2>{tenants}' + (
        f"<h2>By target region</h2>{regions}"
    )


def _timeline_section(items: Sequence[Item], meta: RunMeta, events: Iterable[str] | None) -> str:
    attempts = earlier_attempts(events, items) if events is not None else []
    timeline = build_timeline(items, last_known(items, meta.last_end), attempts)
    legend = "".join(
        f'<span class="swatch" style="background:{COLOURS[k]}"></span>{label}'
        for k, label in (
            (PublicState.SUCCEEDED, "succeeded"),
            (PublicState.FAILED, "failed"),
            (PublicState.RUNNING, "in flight (no end recorded; dashed)"),
            (EARLIER, "an earlier attempt (refused, or proven absent and sent again)"),
        )
    )
    if timeline.empty:
        chart = '<p class="note">No copy has recorded times yet.</p>'
    else:
        span = format_duration(timeline.end - timeline.start)
        chart = (
            f'<p class="note">{_e(format_time(timeline.start))} to '
            f"{_e(format_time(timeline.end))} (UTC), {span}. {legend}</p>"
            + render_timeline_svg(timeline)
        )
    history = (
        "earlier attempts are read from events.jsonl"
        if events is not None
        else "only each item's last attempt is drawn (no events.jsonl was given)"
    )
    notes = [
        "Each bar is one attempt of a copy, from its request to its end as the tool saw it; "
        f"{history}. Lanes come from the times: a copy takes the first lane free when it "
        "starts, so the number of lanes is the most copies a tenant had at once. Hover a bar "
        "for details.",
        "A copy still in flight has no end time: its bar stops at the last moment the checkpoint "
        "knows of and is drawn dashed.",
    ]
    if any(lanes.marks for lanes in timeline.tenants):
        notes.append(
            "Diamonds are copies adopted after a restart (or found already in the target): "
            "their end is known, their start is not."
        )
    if timeline.no_times:
        notes.append(
            f"{timeline.no_times} item(s) succeeded or in flight have no recorded time "
            "(adopted from an earlier copy): not on the chart."
        )
    return chart + "".join(f'<p class="note">{_e(n)}</p>' for n in notes)


def _problem_text(record: dict[str, Value]) -> tuple[Value, Value]:
    """(code, message) of a problem row: the error, else the verify mismatch or what was not
    done after the copy (a copied item to look at)."""
    if record["error_code"] or record["error_message"]:
        return record["error_code"], record["error_message"] or record["detail"]
    code = "verify mismatch" if record["verify"] == "mismatch" else "not done after the copy"
    return code, look_text(record)


def _problems(items: Sequence[Item]) -> str:
    records = [
        item_record(i)
        for i in items
        if i.phase.public.is_problem or (i.phase == Phase.SUCCEEDED and needs_look(i))
    ]
    if not records:
        return "<p>None.</p>"
    return _table(
        ["tenant", "image_id", "source", "target", "name", "state", "attempts", "code", "message"],
        (
            [
                r["tenant"], r["image_id"], r["source_region"], r["target_region"], r["name"],
                r["state"], r["attempts"], *_problem_text(r),
            ]
            for r in records
        ),
    )  # fmt: skip


def _all_items(items: Sequence[Item]) -> str:
    columns = ["line", "tenant", "image_id", "source_region", "target_region", "name", "state",
               "detail", "job_id", "target_image_id", "attempts", "submitted_at",
               "finished_at", "verify", "carried", "notes"]  # fmt: skip
    table = _table(columns, ([item_record(i)[c] for c in columns] for i in items))
    return f"<details><summary>All items ({len(items)})</summary>{table}</details>"


def render_html(
    items: Sequence[Item],
    meta: RunMeta,
    *,
    generated_at: float,
    events: Iterable[str] | None = None,
    title: str = "",
) -> str:
    """The whole report as one HTML document. ``events``: the lines of the state dir's
    events.jsonl (oldest first), for the attempts before each item's last one."""
    summary = summarize(items)
    last = ""
    if meta.last_exit is not None:
        ended = format_time(meta.last_end) if meta.last_end else "?"
        last = (
            f'<p class="meta">Last run: exit {_e(meta.last_exit)} '
            f"({_e(meta.last_reason or '')}), ended {_e(ended)}</p>"
        )
    heading = title or meta.list_path or "migration"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ims-migrate report: {_e(heading)}</title><style>{STYLE}</style></head>
<body>
<h1>ims-migrate report</h1>
<p class="meta">List: {_e(heading)}</p>
<p class="meta">Generated {_e(format_time(generated_at))} (times in UTC)</p>
{last}
<section id="summary">{_summary(summary)}</section>
<section id="timeline"><h2>Copy slots over time, per tenant</h2>
{_timeline_section(items, meta, events)}</section>
<section id="failures"><h2>Failures, rejections and copies to look at</h2>
{_problems(items)}</section>
<section id="items">{_all_items(items)}</section>
</body></html>
"""
