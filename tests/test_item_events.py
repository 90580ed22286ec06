"""An item's event (engine/context.py ``log_item``) is written without structlog's calls around
its processors (``logs.info``): the same bytes as structlog writes, secrets masked all the same,
and through structlog whenever its processors are not the CLI's own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from orchestrator import logs
from orchestrator.core.model import Item, Phase, Row
from orchestrator.engine.context import log_item

_TEXT = st.text(max_size=8) | st.sampled_from(["образ", "a\u2028b", "\x85", "\ud800", "\x00"])
_ID = st.none() | _TEXT
_VALUE = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()  # NaN and the infinities too
    | _TEXT
    | st.lists(st.integers(), max_size=2)
)
# Extra keywords an item's event may carry: a duration, and names that hold a secret.
_KEYS = st.sampled_from(
    ["duration", "sk", "Secret_Key", "password", "authorization", "X-Auth-Token", "level"]
) | st.text(min_size=1, max_size=6).filter(
    lambda key: (
        key not in {"tenant", "item", "state", "phase", "attempt", "job_id", "detail"}
        and key not in {"target_image_id", "error_code", "error_message", "event"}
    )
)


@st.composite
def _items(draw: st.DrawFn) -> Item:
    row = Row(
        line=draw(st.integers(2, 10**6)),
        tenant=draw(_TEXT),
        image_id=draw(_TEXT),
        source_region="cn-north-4",
        target_region=draw(st.sampled_from(["cn-east-3", "ap-southeast-1"])),
    )
    return Item(
        row,
        phase=draw(st.sampled_from(list(Phase))),
        attempt=draw(st.integers(1, 12)),
        detail=draw(_TEXT),
        job_id=draw(_ID),
        target_image_id=draw(_ID),
        error_code=draw(_ID),
        error_message=draw(_ID),
    )


@pytest.fixture
def events(tmp_path: Path) -> Iterator[tuple[Path, list[float]]]:
    """The CLI's processors, an open event log, and the clock its timestamps read."""
    logs.configure()
    [stamper] = [p for p in structlog.get_config()["processors"] if isinstance(p, logs.UtcStamper)]
    now = [1796280950.25]
    stamper._now = lambda: now[0]  # both paths stamp the same moment
    with logs.events_to(tmp_path):
        yield tmp_path / logs.EVENTS, now


def _written(path: Path, item: Item, event: str | None, fields: dict[str, Any]) -> bytes:
    """The line ``log_item`` adds to the event log."""
    before = path.stat().st_size
    log_item(item, event, **fields)
    return path.read_bytes()[before:]


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one log for every example
)
@given(
    item=_items(),
    event=st.none() | st.sampled_from(["item.preflight", "item.retry"]),
    fields=st.dictionaries(_KEYS, _VALUE, max_size=4),
    moment=st.floats(1.7e9, 1.9e9) | st.sampled_from([1796280950.0, 1796280950.9999996]),
)
def test_an_items_event_is_the_line_structlog_writes(
    events: tuple[Path, list[float]],
    monkeypatch: pytest.MonkeyPatch,
    item: Item,
    event: str | None,
    fields: dict[str, Any],
    moment: float,
) -> None:
    """Byte for byte, whatever the item's texts (outside ASCII, line breaks, a lone
    surrogate), its extra fields (NaN, huge ints, lists, names that hold a secret) and the
    moment: the line written without structlog's calls is the one its processors write."""
    path, now = events
    now[0] = moment
    fast = _written(path, item, event, dict(fields))
    with monkeypatch.context() as patch:
        patch.setattr(logs, "_OWN", [None])  # as if the processors were another's: structlog's
        slow = _written(path, item, event, dict(fields))
    assert fast == slow
    assert fast.endswith(b"\n")
    assert fast.count(b"\n") == 1
    written = json.loads(fast)
    for key in fields:
        if key.lower() in logs.SECRET_KEYS:
            assert written[key] == "***"


def test_every_name_that_holds_a_secret_is_masked(events: tuple[Path, list[float]]) -> None:
    """The fast path runs the masking processor: a secret given to an item's event is never
    written, whatever its name's case."""
    path, _now = events
    item = Item(Row(2, "t1", "img-1", "cn-north-4", "cn-east-3"))
    secrets = {name.upper(): f"hush-{n}" for n, name in enumerate(sorted(logs.SECRET_KEYS))}
    line = _written(path, item, None, {**secrets, "duration": 1.5})
    for value in secrets.values():
        assert value.encode() not in line
    written = json.loads(line)
    assert all(written[name] == "***" for name in secrets)
    assert (written["duration"], written["event"], written["level"]) == (
        1.5,
        "item.pending",
        "info",
    )
    assert list(written)[:10] == [
        "tenant",
        "item",
        "state",
        "phase",
        "attempt",
        "job_id",
        "target_image_id",
        "detail",
        "error_code",
        "error_message",
    ]
    assert list(written)[-3:] == ["event", "level", "timestamp"]


def test_other_processors_hear_an_items_event_through_structlog(
    events: tuple[Path, list[float]],
) -> None:
    """While the processors are not the CLI's (``capture_logs``, a test's): structlog's
    call, which they hear, and nothing written by the fast path."""
    path, _now = events
    item = Item(Row(2, "t1", "img-1", "cn-north-4", "cn-east-3"), phase=Phase.RUNNING)
    with capture_logs() as captured:
        log_item(item, duration=2.0)
    assert path.read_bytes() == b""
    [heard] = captured
    assert (heard["event"], heard["state"], heard["phase"], heard["duration"]) == (
        "item.running",
        "running",
        "running",
        2.0,
    )
    log_item(item)  # the CLI's processors again: written
    assert json.loads(path.read_bytes())["event"] == "item.running"


def test_a_field_given_twice_is_refused_as_structlog_refuses_it() -> None:
    """A keyword the event already carries (``tenant``) is a TypeError on either path."""
    item = Item(Row(2, "t1", "img-1", "cn-north-4", "cn-east-3"))
    logs.configure()
    with pytest.raises(TypeError):
        log_item(item, tenant="other")
    with capture_logs(), pytest.raises(TypeError):
        log_item(item, tenant="other")
