"""The HTML report: an honest timeline, a self-contained page, and a real browser renders it."""

from __future__ import annotations

import io
import itertools
import json
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.cli import main
from orchestrator.core.model import Item, Phase, Row
from orchestrator.output.report_html import render_html
from orchestrator.output.timeline import build_timeline, earlier_attempts, last_known
from orchestrator.state.checkpoint import CheckpointStore, acquire_lock, release_lock
from orchestrator.state.meta import RunMeta

T0 = 1_800_000_000.0
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed here (`.ci/run` installs Debian's chromium, so CI runs it)",
)


def item(n: int, phase: Phase, tenant: str = "alpha", **fields: Any) -> Item:
    row = Row(n, tenant, f"img-{n:04d}", "cn-north-4", "cn-east-3")
    return replace(Item(row, phase, copy_name=f"copy-{n}"), **fields)


def story() -> list[Item]:
    """Copies one after another in two lanes, a failure, one in flight, adopted ones, rejects."""
    return [
        item(2, Phase.SUCCEEDED, submitted_at=T0, finished_at=T0 + 100, detail="copied"),
        item(3, Phase.SUCCEEDED, submitted_at=T0 + 10, finished_at=T0 + 60, detail="copied"),
        item(4, Phase.SUCCEEDED, submitted_at=T0 + 50, finished_at=T0 + 200, detail="copied"),
        item(5, Phase.FAILED, submitted_at=T0 + 100, finished_at=T0 + 150, job_id="j5",
             error_code="IMG.0500", error_message="Failed to replicate <b>the</b> image"),
        item(6, Phase.RUNNING, submitted_at=T0 + 150, job_id="j6"),
        item(7, Phase.SUCCEEDED, finished_at=T0 + 120, detail="adopted"),
        item(8, Phase.SUCCEEDED, detail="adopted: already in the target"),
        item(9, Phase.REJECTED, error_code="encrypted", error_message="image is encrypted"),
        item(10, Phase.PENDING),
        item(11, Phase.SUCCEEDED, tenant="beta", submitted_at=T0 + 20, finished_at=T0 + 90),
    ]  # fmt: skip


# -- the timeline --------------------------------------------------------------------------------


def test_lanes_never_overlap_and_count_the_most_copies_at_once() -> None:
    """Each lane holds copies one after another; the lane count is the peak overlap."""
    items = story()
    timeline = build_timeline(items, last_known(items, T0 + 210))
    alpha = next(t for t in timeline.tenants if t.tenant == "alpha")
    assert alpha.count == 3  # items 2, 3 and 4 overlap between T0+50 and T0+60
    for lane in range(alpha.count):
        bars = sorted((b for b in alpha.bars if b.lane == lane), key=lambda b: b.start)
        assert all(a.end <= b.start for a, b in itertools.pairwise(bars))
    assert {b.item.row.line for b in alpha.bars} == {2, 3, 4, 5, 6}


def test_timeline_is_honest_about_missing_times() -> None:
    """In flight: open bar to the last known moment; adopted: end mark only; no times: counted."""
    items = story()
    timeline = build_timeline(items, last_known(items, T0 + 210))
    alpha = next(t for t in timeline.tenants if t.tenant == "alpha")
    running = next(b for b in alpha.bars if b.item.row.line == 6)
    assert running.open_end
    assert running.end == T0 + 210
    assert [m.item.row.line for m in alpha.marks] == [7]
    assert timeline.no_times == 1  # item 8: adopted before any time was recorded
    assert (timeline.start, timeline.end) == (T0, T0 + 210)


def event(key: str, phase: str, attempt: int, second: float, detail: str = "") -> str:
    moment = datetime.fromtimestamp(T0 + second, tz=UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"event": f"item.{phase}", "item": key, "phase": phase, "attempt": attempt,
         "detail": detail, "timestamp": moment}
    )  # fmt: skip


def test_earlier_attempts_come_from_the_events_so_their_slot_is_not_idle() -> None:
    """A first attempt reconciled then sent again is drawn from the events, before the second."""
    retried = item(2, Phase.SUCCEEDED, attempt=2, submitted_at=T0 + 4, finished_at=T0 + 9)
    key = retried.key
    lines = [
        event(key, "pending", 1, 0),
        event(key, "submitting", 1, 1),
        event(key, "reconciling", 1, 1.1, "reconciling: HTTP 503"),
        '{"torn": ',
        json.dumps({"event": "run.finished", "exit_code": 0}),
        event(key, "pending", 2, 4, "copy proven absent after 3 s"),
        event(key, "submitting", 2, 4),
        event(key, "succeeded", 2, 9, "copied"),
    ]
    attempts = earlier_attempts(lines, [retried])
    assert [(a.number, a.start, a.end, a.outcome) for a in attempts] == [
        (1, T0 + 1, T0 + 4, "copy proven absent after 3 s")
    ]
    timeline = build_timeline([retried], T0 + 9, attempts)
    [lanes] = timeline.tenants
    assert lanes.count == 1
    assert [(b.earlier is not None, b.start, b.end) for b in lanes.bars] == [
        (True, T0 + 1, T0 + 4),
        (False, T0 + 4, T0 + 9),
    ]
    page = render_html([retried], RunMeta(), generated_at=T0, events=lines)
    assert "attempt 1 of 2" in page
    assert "earlier attempts are read from events.jsonl" in page


# -- the page ------------------------------------------------------------------------------------


def test_page_is_self_contained_and_escapes_what_the_cloud_said() -> None:
    """No script, no external reference, a CSP that forbids loads; messages are escaped."""
    meta = RunMeta(list_path="/srv/m.csv", last_exit=1)
    page = render_html(story(), meta, generated_at=T0)
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", page)
    assert re.findall(r"https?://[^\s\"'<]+", page) == ["http://www.w3.org/2000/svg"]
    assert "default-src 'none'" in page
    assert "Failed to replicate &lt;b&gt;the&lt;/b&gt; image" in page
    assert "IMG.0500" in page
    assert "start unknown" in page
    assert "1 item(s) succeeded or in flight have no recorded time" in page


def test_report_html_from_the_cli(tmp_path: Path) -> None:
    """`report --format html --output FILE` writes the page from the checkpoint."""
    state_dir = tmp_path / "m.state"

    async def save() -> None:
        fd = acquire_lock(state_dir)
        store = CheckpointStore(state_dir)
        store.open()
        await store.commit(story(), meta=RunMeta(last_exit=1, last_reason="1 failed"))
        store.close()
        release_lock(fd)

    anyio.run(save)
    output = tmp_path / "report.html"
    code = main(
        ["report", "--state-dir", str(state_dir), "--format", "html", "--output", str(output)],
        environ={},
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert code == 0
    assert "Copy slots over time" in output.read_text()


# -- in a real browser ---------------------------------------------------------------------------


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def console_messages(stderr: str) -> list[str]:
    """What the page said on its console: script errors, refused loads (CSP)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@needs_chromium
def test_browser_check_catches_a_script_error(tmp_path: Path) -> None:
    """The check below is trusted: a page with a script error is caught by it."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    done = chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert any("boom" in line for line in console_messages(done.stderr))


@needs_chromium
def test_chromium_renders_the_report_without_errors(tmp_path: Path) -> None:
    """Headless Chromium lays the report out (chart, tables, screenshot) with no console error."""
    page = tmp_path / "report.html"
    page.write_text(render_html(story(), RunMeta(last_exit=1), generated_at=T0), encoding="utf-8")
    dom = chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    assert dom.stdout.count('class="bar ') == 6
    assert 'id="failures"' in dom.stdout
    assert "IMG.0500" in dom.stdout
    shot = tmp_path / "shot.png"
    drawn = chromium(
        tmp_path / "profile", "--window-size=1200,900", f"--screenshot={shot}", page.as_uri()
    )
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    assert console_messages(drawn.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a blank page is a few kB
