"""Reports: one record per item with the documented columns; summaries count what users see."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from dataclasses import fields, replace
from typing import Any

import pytest

from orchestrator.core.model import Item, Phase, PublicState, Row
from orchestrator.output.report import (
    CSV_PART,
    REPORT_COLUMNS,
    csv_parts,
    format_time,
    item_detail,
    item_record,
    render_csv,
    render_json,
    render_markdown,
    summarize,
)

T0 = 1_774_574_270.0  # 2026-03-27T01:17:50Z


def row(image_id: str = "img-1", tenant: str = "default", target: str = "cn-east-3") -> Row:
    return Row(
        line=2, tenant=tenant, image_id=image_id, source_region="cn-north-4", target_region=target
    )


def item(
    phase: Phase = Phase.PENDING, image_id: str = "img-1", tenant: str = "default", **changes: Any
) -> Item:
    return replace(Item(row=row(image_id, tenant)), phase=phase, **changes)


SUCCEEDED = item(
    Phase.SUCCEEDED,
    image_id="img-ok",
    copy_name="web-01",
    job_id="job-1",
    target_image_id="new-1",
    submitted_at=T0,
    finished_at=T0 + 3600.5,
    detail="adopted",
)
FAILED = item(
    Phase.FAILED, image_id="img-bad", attempt=2, error_code="IMG.0130", error_message="full | ECS"
)
REJECTED = item(
    Phase.REJECTED, image_id="img-big", tenant="prod", error_code="too_large", error_message="big"
)
RUNNING = item(Phase.RECONCILING, image_id="img-run", detail="reconciling", listed=False)


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_format_time_is_iso_utc_with_z() -> None:
    """Epoch seconds become ISO 8601 UTC with Z; None stays None."""
    assert format_time(T0) == "2026-03-27T01:17:50Z"
    assert format_time(None) is None


def test_csv_header_is_the_documented_columns() -> None:
    """The CSV header is exactly REPORT_COLUMNS, even with no items."""
    assert render_csv([]).splitlines() == [",".join(REPORT_COLUMNS)]


def test_csv_record_of_a_succeeded_item() -> None:
    """Every column of a finished item is filled as documented."""
    (record,) = parse_csv(render_csv([SUCCEEDED]))
    assert record == {
        "tenant": "default",
        "image_id": "img-ok",
        "source_region": "cn-north-4",
        "target_region": "cn-east-3",
        "name": "web-01",
        "state": "succeeded",
        "detail": "adopted",
        "job_id": "job-1",
        "target_image_id": "new-1",
        "attempts": "1",
        "submitted_at": "2026-03-27T01:17:50Z",
        "finished_at": "2026-03-27T02:17:50Z",
        "error_code": "",
        "error_message": "",
        "line": "2",
        "verify": "",
        "mismatch": "",
        "carried": "",
        "notes": "",
    }


def test_in_flight_phases_are_running_with_detail() -> None:
    """Reconciling shows as running; the fine state is in detail."""
    (record,) = parse_csv(render_csv([RUNNING]))
    assert record["state"] == "running"
    assert record["detail"] == "reconciling; no longer listed"


def test_no_longer_listed_alone() -> None:
    """An unlisted item without detail says only that."""
    assert item_detail(item(listed=False)) == "no longer listed"


def test_name_falls_back_to_row_name() -> None:
    """Before a copy name is known, the row's name is shown."""
    named = Item(row=replace(row(), name="from-row"))
    assert parse_csv(render_csv([named]))[0]["name"] == "from-row"


def test_csv_quotes_awkward_values() -> None:
    """Commas, quotes and newlines in messages survive a CSV round trip."""
    awkward = item(Phase.FAILED, error_message='a, "b"\nc')
    assert parse_csv(render_csv([awkward]))[0]["error_message"] == 'a, "b"\nc'


def test_items_keep_given_order() -> None:
    """Records come in the order the items are given."""
    records = parse_csv(render_csv([FAILED, SUCCEEDED]))
    assert [r["image_id"] for r in records] == ["img-bad", "img-ok"]


def test_the_report_is_made_in_parts_never_whole() -> None:
    """report.csv is written part by part (a 100,000-item report is never one string in
    memory): CSV_PART lines at a time, and together the parts are the report."""
    many = [item(image_id=f"img-{n}", error_message="two\nlines") for n in range(2 * CSV_PART + 1)]
    parts = list(csv_parts(many))
    assert len(parts) == 3  # the header and CSV_PART lines, CSV_PART lines, the last line
    whole = b"".join(parts).decode()
    assert [r["image_id"] for r in parse_csv(whole)] == [i.row.image_id for i in many]
    assert parse_csv(whole)[-1]["error_message"] == "two\nlines"


def test_summary_counts_by_state_tenant_and_region() -> None:
    """Counts by public state, tenant and target region; in flight per tenant."""
    summary = summarize([SUCCEEDED, FAILED, REJECTED, RUNNING, item(image_id="p")])
    assert summary.total == 5
    assert dict(summary.by_state) == {
        "pending": 1,
        "running": 1,
        "succeeded": 1,
        "failed": 1,
        "rejected": 1,
    }
    assert dict(summary.by_tenant["prod"]) == {
        "pending": 0,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "rejected": 1,
    }
    assert summary.by_target_region["cn-east-3"][PublicState.RUNNING] == 1
    assert dict(summary.in_flight) == {"default": 1, "prod": 0}
    assert summary.not_listed == 1
    assert not summary.finished


def test_summary_of_terminal_items_is_finished() -> None:
    """Only succeeded/failed/rejected items: finished."""
    assert summarize([SUCCEEDED, FAILED, REJECTED]).finished


def test_summary_of_nothing() -> None:
    """No items: zero counts, finished."""
    summary = summarize([])
    assert summary.total == 0
    assert summary.finished


def test_json_has_summary_and_typed_items() -> None:
    """JSON: the summary, then items with null for absent values and integer attempts."""
    items = [SUCCEEDED, FAILED]
    document = json.loads(render_json(items, summarize(items)))
    assert document["summary"]["total"] == 2
    assert document["summary"]["by_state"]["failed"] == 1
    first, second = document["items"]
    assert list(first)[: len(REPORT_COLUMNS)] == list(REPORT_COLUMNS)
    assert first["finished_at"] == "2026-03-27T02:17:50Z"
    assert second["attempts"] == 2
    assert second["job_id"] is None
    assert second["listed"] is True


def test_markdown_lists_failures_and_rejections() -> None:
    """The Markdown report has the headline, tables, and one line per failure or rejection."""
    items = [SUCCEEDED, FAILED, REJECTED, RUNNING]
    text = render_markdown(items, summarize(items))
    assert "**4 items**: 0 pending, 1 running, 1 succeeded, 1 failed, 1 rejected" in text
    assert "(1 no longer listed)" in text
    assert "| default | 3 | 0 | 1 | 1 | 1 | 0 | 1 |" in text
    assert "| prod | 1 | 0 | 0 | 0 | 0 | 1 | 0 |" in text
    assert "| cn-east-3 | 4 |" in text
    assert "img-bad" in text
    assert "img-big" in text
    assert "img-ok" not in text.split("## Failures and rejections")[1].split("## Items")[0]


def test_markdown_escapes_pipes_and_newlines() -> None:
    """A pipe or a newline in a message cannot break the table."""
    text = render_markdown([FAILED], summarize([FAILED]))
    assert "full \\| ECS" in text
    odd = item(Phase.FAILED, error_message="a\nb")
    assert "| a b |" in render_markdown([odd], summarize([odd]))


def test_markdown_without_failures_says_none() -> None:
    """No failures: the section says None."""
    text = render_markdown([SUCCEEDED], summarize([SUCCEEDED]))
    assert text.split("## Failures and rejections")[1].split("## Items")[0].strip() == "None."


def test_item_carries_nothing_secret() -> None:
    """Item fields are the documented, non-secret ones: no key, token or credential field."""
    names = {f.name for f in fields(Item)} | {f.name for f in fields(Row)}
    assert not {n for n in names if any(w in n for w in ("secret", "key", "credential", "token"))}


def _cells_as_rendered(text: str) -> list[str]:
    """The body cells of the Markdown's tables as a CommonMark renderer with GFM tables and
    strikethrough shows them (rich's markdown-it, already installed): HTML text."""
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text)
    return re.findall(r"<td[^>]*>(.*?)</td>", html, flags=re.DOTALL)


def test_markdown_leaves_underscores_inside_words_alone() -> None:
    """Tenant names, image names and codes with `_` inside a word read as typed in plain text:
    CommonMark never starts emphasis there."""
    odd = replace(
        item(Phase.FAILED, image_id="img_7f3a", tenant="prod_eu", error_code="JOB_DEADLINE"),
        copy_name="web_01_base #2",
    )
    text = render_markdown([odd], summarize([odd]))
    for word in ("prod_eu", "img_7f3a", "JOB_DEADLINE", "web_01_base #2"):
        assert f" {word} |" in text
    assert "\\_" not in text


NASTY = [
    "_x_ and __y__",
    "a __b__ c",
    "(_x_) x_ _y",
    "*a* **b** a*b*c",
    "~s~ ~~t~~",
    "`code` ``x``",
    "[a](http://e.x) ![i](http://e.x/i.png) [r]",
    "<script>alert(1)</script> <b>x</b> <http://e.x>",
    "&lt;i&gt; &#60;b&#62; &amp; R&D",
    "a|b \\| c\\_d \\",
    "# not a heading",
    "snake__double__under",
]


@pytest.mark.parametrize("message", NASTY)
def test_markdown_cells_render_as_the_text_itself(message: str) -> None:
    """Whatever the list holds, a renderer shows the cell's text as typed: no emphasis, link,
    image, code, strikethrough or HTML, and nothing lost or added."""
    odd = item(Phase.FAILED, error_message=message)
    cells = _cells_as_rendered(render_markdown([odd], summarize([odd])))
    assert message in [html.unescape(cell) for cell in cells]
    for cell in cells:
        assert "<" not in cell, cell


def test_the_csv_cells_are_the_records_of_item_record() -> None:
    """render_csv builds its rows straight from the items (fast at 100,000): the same cells as
    item_record, times near a whole second included."""
    one = Row(line=7, tenant="t", image_id="img", source_region="a", target_region="b")
    items = [
        Item(one),
        Item(one, phase=Phase.RUNNING, job_id="j", submitted_at=1_800_000_000.9999996),
        Item(
            one,
            phase=Phase.SUCCEEDED,
            submitted_at=1_800_000_000.25,
            finished_at=1_800_000_100.0,
            verify="ok",
            notes="a | b",
            undone="a",
            listed=False,
            detail="copied",
        ),
    ]
    records = list(csv.reader(io.StringIO(render_csv(items))))[1:]
    expected = [
        ["" if (value := item_record(item)[c]) is None else str(value) for c in REPORT_COLUMNS]
        for item in items
    ]
    assert records == expected


AWKWARD = ["a,b", 'say "hi"', "two\nlines", "cr\rhere", "nul\x00", " lead", "é ü", "", ",", '"']


def test_report_lines_are_the_csv_modules_whatever_the_cells_hold() -> None:
    """report.csv joins the cells of a line itself when none needs quoting: every line is
    still the csv module's own (commas, quotes, line breaks, NUL, spaces, non-ASCII, empty)."""
    items = [item(image_id="plain", error_message="nothing to quote", copy_name="web-01")]
    for n, text in enumerate(AWKWARD):
        items.append(item(image_id=f"m{n}", error_message=text))
        items.append(item(image_id=f"c{n}", copy_name=text, detail=text, notes=text))
        items.append(item(Phase.FAILED, image_id=f"f{n}", error_code=text, mismatch=text))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    writer.writerows(
        ["" if value is None else value for value in item_record(i).values()] for i in items
    )
    assert render_csv(items) == out.getvalue()
