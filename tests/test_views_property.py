"""Property: whatever the list holds (good, bad and key-less rows), every data line is exactly
one row of the report, in csv, json, md and html alike (design I3), through the CLI's main."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.inprocess import LocalCloud
from tests.test_views_e2e import HEADER, NORTH, report_lines

POOL = 6  # source images the good rows choose from (a repeat is a duplicate row)

ROW_KINDS = st.one_of(
    st.integers(0, POOL - 1).map(lambda i: ("good", i)),
    st.sampled_from(
        [
            ("bad", "{image},cn-north-4,cn-north-4,"),  # target == source
            ("bad", "{image},cn-north-4,cn-east3,"),  # unknown region
            ("bad", '{image},cn-north-4,cn-east-3,"x <y>"'),  # bad description
            ("bad", "{image},cn-north-4,,"),  # no target
            ("nokey", ",cn-north-4,cn-east-3,"),  # no image id
            ("nokey", "not an id,cn-north-4,cn-east-3,"),  # malformed image id
            ("nokey", "a/b,cn-north-4,cn-east-3,"),  # malformed image id
        ]
    ),
)


def world(root: Path) -> tuple[LocalCloud, list[str]]:
    cloud = LocalCloud(root)
    cloud.account("t0")
    images = [cloud.image("t0", 1) for _ in range(POOL)]
    cloud.start()
    return cloud, images


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rows=st.lists(st.tuples(ROW_KINDS, st.integers(0, POOL - 1)), min_size=1, max_size=12))
def test_report_rows_are_the_data_lines(rows: list[tuple[tuple[str, object], int]]) -> None:
    """For any mix of good, bad and key-less rows: one report row per data line, every format."""
    with tempfile.TemporaryDirectory() as folder:
        cloud, images = world(Path(folder))
        lines = [HEADER]
        for (kind, what), pick in rows:
            if kind == "good":
                assert isinstance(what, int)
                lines.append(f"t0,{images[what]},{NORTH},cn-east-3,")
            else:
                assert isinstance(what, str)
                lines.append("t0," + what.format(image=images[pick]))
        cloud.list_path.write_text("\n".join(lines) + "\n")
        done = cloud.run("--progress", "none")
        assert done.returncode in (0, 1), done.stderr
        data_lines = Counter(range(2, len(lines) + 1))
        for fmt, found in report_lines(cloud).items():
            assert Counter(found) == data_lines, (fmt, done.stderr)
