"""The demo, as a new user runs it: its planted rejections are report rows and are expected."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from orchestrator.cli import main


def test_the_demos_report_has_a_row_per_line_and_says_rejections_are_expected(
    tmp_path: Path,
) -> None:
    """The demo's 68-row list reports 68 rows (line 2 to 69) and its last words say the planted
    rejections are expected, with exit 0."""
    out, err = io.StringIO(), io.StringIO()
    code = main(["demo", "--workdir", str(tmp_path), "--progress", "none"], {}, out, err)
    assert code == 0, err.getvalue()
    report = (tmp_path / "migration.state" / "report.csv").read_text()
    lines = sorted(int(row["line"]) for row in csv.DictReader(io.StringIO(report)))
    assert lines == list(range(2, 70))
    text = " ".join(out.getvalue().split())
    assert "rejections above were planted on purpose" in text
    assert "the demo itself exits 0" in text
