"""The event log's own processors (orchestrator/logs.py)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from orchestrator import logs
from orchestrator.logs import UtcStamper

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
