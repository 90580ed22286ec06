"""The demo, as a new user runs it: its planted rejections are report rows and are expected."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from orchestrator.cli import main


def test_the_demos_report_has_a_row_per_line_and_says_rejections_are_expected(
    tmp_path: Path,
) -> None:
    """The demo's list (good and planted bad rows) reports one row per data line, and its last
    words say the planted rejections are expected, with exit 0."""
    out, err = io.StringIO(), io.StringIO()
    code = main(["demo", "--workdir", str(tmp_path), "--progress", "none"], {}, out, err)
    assert code == 0, err.getvalue()
    report = (tmp_path / "migration.state" / "report.csv").read_text()
    lines = sorted(int(row["line"]) for row in csv.DictReader(io.StringIO(report)))
    listed = (tmp_path / "migration.csv").read_text().splitlines()
    assert lines == [n for n, text in enumerate(listed, start=1) if n > 1 and text.strip()]
    assert len(lines) > 60
    text = " ".join(out.getvalue().split())
    assert "rejections above were planted on purpose" in text
    assert "the demo itself exits 0" in text
