"""The event log's own processors (orchestrator/logs.py)."""

from __future__ import annotations

import enum
import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import logs
from orchestrator.core.model import Phase, PublicState
from orchestrator.logs import UtcStamper, event_line

EDGES = [1796280950.0, 1796280950.5, 1796280950.9999996, 1796280950.0000004, 0.25]


def _iso(moment: float) -> str:
    """What structlog's TimeStamper(fmt="iso", utc=True) writes for ``moment``."""
    return datetime.fromtimestamp(moment, tz=UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    "moment", EDGES + [random.Random(7).uniform(1.7e9, 1.9e9) for _ in range(50)]
)
def test_the_timestamp_is_structlogs_iso_utc_text(moment: float) -> None:
    """Same text as a datetime's isoformat, whole seconds (no fraction) and the rounding of
    the microseconds into the next second included, each event of a second reusing its date."""
    stamper = UtcStamper(lambda: moment)
    for _ in range(2):
        assert stamper(None, "info", {})["timestamp"] == _iso(moment)


def test_a_new_second_gets_its_own_date() -> None:
    """The cached date and time follow the clock into the next second (and the next day)."""
    moments = iter([86399.5, 86400.25])
    stamper = UtcStamper(lambda: next(moments))
    assert stamper(None, "info", {})["timestamp"] == "1970-01-01T23:59:59.500000Z"
    assert stamper(None, "info", {})["timestamp"] == "1970-01-02T00:00:00.250000Z"


def test_a_logger_cached_before_the_cli_configures_still_hears_the_run(tmp_path: Path) -> None:
    """Loggers are cached on first use (logs.configure). One cached earlier in the process,
    with other processors (a test's, or an earlier in-process run's), still writes the events
    of a run configured after it: the processor list is changed in place, never replaced."""
    structlog.configure(cache_logger_on_first_use=True)
    early = structlog.get_logger("cached-early")
    early.info("before the run")  # cached now, with this test's processors (dropped)
    logs.configure()
    with logs.events_to(tmp_path):
        early.info("during the run", sk="secret")
    lines = (tmp_path / logs.EVENTS).read_text().splitlines()
    [event] = [json.loads(line) for line in lines]
    assert (event["event"], event["sk"], event["level"]) == ("during the run", "***", "info")


class _Plain(enum.Enum):
    ONE = 1


@dataclass(frozen=True)
class _Shape:
    size: int = 3


_TEXT = st.text(max_size=6) | st.sampled_from(["\x85", "a\u2028b", "\u2029", "\x1c"])
_ODD = st.sampled_from(
    [_Plain.ONE, _Shape(), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), Phase.RUNNING, {1, 2}]
)
_FLAT = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _TEXT
_VALUES = st.recursive(
    _FLAT | _ODD,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_KEYS = _TEXT | st.integers(0, 3)
_JSON = json.JSONEncoder(default=str, separators=(",", ":")).encode


def _as_json_reads(line: bytes | str) -> str:
    return _JSON(json.loads(line))


@settings(max_examples=300, deadline=None, database=None)
@given(
    event=st.dictionaries(_KEYS, _FLAT, max_size=6) | st.dictionaries(_KEYS, _VALUES, max_size=6)
)
def test_an_event_line_reads_back_as_json_default_str_wrote_it(event: dict[Any, Any]) -> None:
    """Whatever the values (NaN and infinities, enums, dataclasses, datetimes, sets, nested,
    text outside ASCII, huge ints, keys not str): one line, read back as the value of
    ``json.dumps(event, default=str)``'s text."""
    line = event_line(event)
    assert line.endswith(b"\n")
    assert len(line.decode().splitlines()) == 1  # how the CLI reads the log (cli/common.py)
    assert _as_json_reads(line) == _as_json_reads(_JSON(event))


def test_an_events_odd_values_are_written_as_before(tmp_path: Path) -> None:
    """A NaN stays NaN (orjson would write null); an enum, a dataclass and a datetime are
    their ``str`` (orjson writes its own forms); a StrEnum its text: as json wrote them."""
    logs.configure()
    log = structlog.get_logger("odd-values")
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with logs.events_to(tmp_path):
        log.info("rate", rate=math.nan, item="a")
        log.info("top", top=-math.inf, item="a")
        for value in (_Plain.ONE, _Shape(), moment):
            log.info("odd", value=value)
        log.info("plain", state=PublicState.RUNNING, phase=Phase.RUNNING, name="образ", size=1.5)
    lines = (tmp_path / logs.EVENTS).read_bytes().splitlines()
    rate, top, *odd, plain = [json.loads(line) for line in lines]
    assert math.isnan(rate["rate"])
    assert top["top"] == -math.inf
    assert [event["value"] for event in odd] == [str(_Plain.ONE), str(_Shape()), str(moment)]
    assert (plain["state"], plain["phase"], plain["name"], plain["size"]) == (
        "running",
        "running",
        "образ",
        1.5,
    )
