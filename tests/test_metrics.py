"""Prometheus textfile metrics: well-formed, the right numbers, replaced atomically."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from orchestrator.core.model import Item, Phase, Row
from orchestrator.output.metrics import RunFacts, render_metrics, write_metrics

LABEL_PAIR = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE = re.compile(
    rf"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{{(?P<labels>(?:{LABEL_PAIR},?)*)\}} "
    r"(?P<value>-?[0-9.e+]+)$"
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


def item(tenant: str, n: int, phase: Phase) -> Item:
    return Item(Row(n, tenant, f"img-{n}", "cn-north-4", "cn-east-3"), phase)


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition text; fails on a malformed line or an undeclared family."""
    declared: set[str] = set()
    samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind == "gauge"
            declared.add(name)
            continue
        match = SAMPLE.match(line)
        assert match, f"malformed sample line: {line!r}"
        assert match["name"] in declared, f"{match['name']} has no # TYPE before it"
        labels = frozenset(LABEL.findall(match["labels"]))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def test_metrics_count_items_by_state_and_in_flight_per_tenant() -> None:
    """Items by tenant and state, copies in flight, and the last run's end and exit code."""
    items = [
        item("alpha", 2, Phase.SUCCEEDED),
        item("alpha", 3, Phase.RUNNING),
        item("alpha", 4, Phase.RECONCILING),
        item("beta", 5, Phase.FAILED),
        item("beta", 6, Phase.PENDING),
    ]
    facts = RunFacts("/srv/m.csv", started_at=100.0, in_progress=False, ended_at=200.5, exit_code=1)
    samples = parse(render_metrics(items, facts))
    lst = ("list", "/srv/m.csv")

    def value(name: str, **labels: str) -> float:
        return samples[(f"ims_migrate_{name}", frozenset({lst, *labels.items()}))]

    assert value("items", tenant="alpha", state="succeeded") == 1
    assert value("items", tenant="alpha", state="running") == 2
    assert value("items", tenant="beta", state="failed") == 1
    assert value("items", tenant="beta", state="pending") == 1
    assert value("items", tenant="beta", state="rejected") == 0
    assert value("in_flight", tenant="alpha") == 2
    assert value("in_flight", tenant="beta") == 0
    assert value("run_in_progress") == 0
    assert value("last_run_end_timestamp_seconds") == 200.5
    assert value("last_run_exit_code") == 1


def test_a_run_in_progress_without_a_previous_run_has_no_exit_code() -> None:
    """While the first run goes on: in progress, a start time, no end time nor exit code."""
    text = render_metrics([item("a", 2, Phase.PENDING)], RunFacts("l", 5.0, in_progress=True))
    names = {name for name, _ in parse(text)}
    assert "ims_migrate_run_in_progress" in names
    assert "ims_migrate_last_run_exit_code" not in names
    assert "ims_migrate_last_run_end_timestamp_seconds" not in names


def test_label_values_are_escaped() -> None:
    """A list path with a quote, a backslash or a line break cannot break the format."""
    facts = RunFacts(
        'C:\\lists\\"odd"\nname.csv', 1.0, in_progress=False, ended_at=2.0, exit_code=0
    )
    samples = parse(render_metrics([item("a", 2, Phase.SUCCEEDED)], facts))
    lists = {value for _, labels in samples for key, value in labels if key == "list"}
    assert lists == {r"C:\\lists\\\"odd\"\nname.csv"}


def test_write_replaces_the_file_atomically_and_readably(tmp_path: Path) -> None:
    """The file is replaced by rename, readable by node_exporter, and no temp file is left."""
    path = tmp_path / "ims-migrate.prom"
    path.write_text("old\n")
    write_metrics(path, "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["ims-migrate.prom"]


def test_write_into_a_missing_folder_raises_and_leaves_nothing(tmp_path: Path) -> None:
    """A missing folder is an OSError for the caller to report."""
    with pytest.raises(OSError, match="No such file"):
        write_metrics(tmp_path / "missing" / "m.prom", "x\n")
    assert list(tmp_path.iterdir()) == []
