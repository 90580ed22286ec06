"""Disk faults: when the state cannot be saved the run stops posting and exits 74 with a clear
message, the last good checkpoint stays readable, and a rerun without the fault finishes with no
duplicate.

Two ways to fail a save: ``fsync`` made to fail with ENOSPC by the crash harness
(``orchestrator/simulator/crash_harness.py``: the N-th one of the journal, once or from then on;
the moment is written to a mark file), and a real ``EFBIG`` from ``RLIMIT_FSIZE`` in the child
(with ``SIGXFSZ`` ignored, so ``write`` fails part way instead of the process dying), which hits
whichever state file grows past the limit.
"""

from __future__ import annotations

import resource
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.model import Phase
from orchestrator.simulator.crash_harness import (
    History,
    copy_posts,
    harness_args,
    judge_finished,
    run_to_end,
    stray_files,
)
from orchestrator.simulator.harness import Cloud

pytestmark = pytest.mark.e2e

ITEMS = 24


def faulty_run(
    cloud: Cloud, timeout: float = 60, preexec: Callable[[], None] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        harness_args(cloud),
        env=cloud.env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=preexec,  # only sets a resource limit and a signal disposition
    )


def world(cloud: Cloud) -> None:
    cloud.params.update(seconds_per_gib=0.01, fixed_seconds=0.15, init_seconds=0.05)
    cloud.timing.update(settle=0.5)
    cloud.populate(tenants=2, per_tenant=ITEMS // 2)
    cloud.start()


def fault_time(mark: Path) -> float:
    return float(mark.read_text().split()[0])


def assert_stopped_cleanly(cloud: Cloud, done: subprocess.CompletedProcess[str]) -> None:
    """Exit 74 with what failed and what to do; every copy the cloud has is known to the
    checkpoint, which parses; no temp file is left behind."""
    assert done.returncode == 74, done.stderr
    assert "cannot save the state" in done.stderr, done.stderr
    assert "free disk space" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    history = History()
    phases = history.observe(cloud.state_dir, "after the fault")
    assert history.violations == []
    for key in cloud.truth().submissions:
        assert phases.get(key, Phase.PENDING) != Phase.PENDING, f"{key}: copied, not in the state"
    assert [name for name in stray_files(cloud.state_dir) if name.startswith(".")] == []


def posts_after(cloud: Cloud, moment: float, grace: float = 0.5) -> list[dict[str, Any]]:
    """Copy POSTs that reached the simulator after ``moment`` (plus a POST's flight time)."""
    return [post for post in copy_posts(cloud) if post["time"] > moment + grace]


# Journal fsyncs of a first run: the list path, the items, the preflight results, then the
# group-committed intents, job ids and successes. The 9th is well into the copies: at most 10
# intents can go before the first job id (2 tenants x 5 slots), and they take 2 writes or more.
COPYING = 9


def test_journal_fsync_failing_once_stops_the_run_with_74(cloud: Cloud) -> None:
    """A journal fsync fails while copies run: exit 74 at once, no POST after it (though the
    fault is gone), the state loads; a rerun finishes with no duplicate."""
    world(cloud)
    mark = cloud.root / "fault"
    done = faulty_run(cloud, HARNESS_FSYNC_FAIL=f"{COPYING}:journal", HARNESS_MARK=str(mark))
    assert_stopped_cleanly(cloud, done)
    failed_at = fault_time(mark)
    assert [p for p in copy_posts(cloud) if p["time"] < failed_at], "nothing in flight"
    assert posts_after(cloud, failed_at) == []
    run_to_end(cloud)
    judge_finished(cloud, ITEMS)


def test_fsync_failing_for_ever_keeps_failing_cleanly(cloud: Cloud) -> None:
    """A disk that stays full: the run exits 74; the next runs fail their first write (the fold
    of the journal into a new snapshot) and exit 74 with no POST, checkpoint.json byte for byte
    the last good one; once the disk is fixed, a run finishes with no duplicate."""
    world(cloud)
    mark = cloud.root / "fault"
    done = faulty_run(cloud, HARNESS_FSYNC_FAIL=f"{COPYING}:always", HARNESS_MARK=str(mark))
    assert_stopped_cleanly(cloud, done)
    posts = len(copy_posts(cloud))
    last_good = (cloud.state_dir / "checkpoint.json").read_bytes()
    for _ in range(2):
        again = faulty_run(cloud, HARNESS_FSYNC_FAIL="1:always")
        assert_stopped_cleanly(cloud, again)
        assert len(copy_posts(cloud)) == posts
        assert (cloud.state_dir / "checkpoint.json").read_bytes() == last_good
    run_to_end(cloud)
    judge_finished(cloud, ITEMS)


def limit_file_size(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_file_size_limit_fails_a_write_midway_then_exits_74(cloud: Cloud) -> None:
    """Real EFBIGs: the journal outgrows the limit mid-run (a line cut short), then the next
    run's new snapshot does as its first write folds that journal in (a temp file cut short):
    each exits 74, checkpoint.json stays the last good one and loads, the cut line is
    repaired; a run without the limit finishes."""
    world(cloud)
    done = faulty_run(cloud, preexec=limit_file_size(30_000))
    assert_stopped_cleanly(cloud, done)
    last_good = (cloud.state_dir / "checkpoint.json").read_bytes()
    assert len(last_good) < 4_000 < (cloud.state_dir / "journal.jsonl").stat().st_size
    (cloud.state_dir / "events.jsonl").write_bytes(b"")  # the log would meet the limit first
    again = faulty_run(cloud, preexec=limit_file_size(4_000))
    assert_stopped_cleanly(cloud, again)
    assert (cloud.state_dir / "checkpoint.json").read_bytes() == last_good
    run_to_end(cloud)
    judge_finished(cloud, ITEMS)
