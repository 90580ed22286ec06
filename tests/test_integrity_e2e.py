"""The real CLI against the simulator when the state is wrong: a second state dir on the same
list, a damaged checkpoint or journal, a lost lock. Judged on the simulator's ground truth."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator

import pytest

from orchestrator.simulator.crash_harness import judge_finished, kill_sweep, reap, seed_from_env
from orchestrator.simulator.harness import Cloud

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _reap_runs() -> Iterator[None]:
    """No run started in the background outlives its test (or its simulator)."""
    yield
    reap()


def fleet(cloud: Cloud, rows: int = 12) -> None:
    cloud.account("acme")
    for _ in range(rows):
        cloud.row("acme", 40)
    cloud.start()


def stopped_early(cloud: Cloud) -> None:
    """A first run stopped by its deadline with items left pending (checked, unsubmitted)."""
    done = cloud.run("--deadline", "1")
    assert done.returncode == 75, done.stderr
    assert "pending" in cloud.item_states().values()


def test_a_second_state_dir_then_the_original_resumed_copies_nothing_twice(cloud: Cloud) -> None:
    """The same list run to the end through --state-dir other.state, then the original."""
    fleet(cloud)
    stopped_early(cloud)
    other = cloud.run("--state-dir", str(cloud.root / "other.state"))
    assert other.returncode == 0, other.stderr
    resumed = cloud.run()
    assert resumed.returncode == 0, resumed.stderr
    truth = cloud.truth()
    assert truth.duplicates == ()
    assert set(cloud.item_states().values()) == {"succeeded"}


def killed_with_copies_in_flight(cloud: Cloud) -> None:
    """A run killed (-9) once its journal holds submissions and job ids, items left pending."""
    process = cloud.spawn()
    journal = cloud.state_dir / "journal.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = journal.read_text() if journal.exists() else ""
        if text.count('"phase":"running"') >= 3:
            break
        time.sleep(0.01)
    process.kill()
    process.wait(10)


def damage_first_submission(cloud: Cloud) -> int:
    """One byte changed in the journal's first ``submitting`` line; its line number."""
    journal = cloud.state_dir / "journal.jsonl"
    lines = journal.read_bytes().split(b"\n")
    number = next(n for n, line in enumerate(lines) if b'"phase":"submitting"' in line)
    lines[number] = lines[number].replace(b'"item":', b'"item";', 1)
    journal.write_bytes(b"\n".join(lines))
    return number + 1


def state_files(cloud: Cloud) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in cloud.state_dir.iterdir() if p.name != "lock"}


def test_a_damaged_journal_stops_the_run_then_repair_state_copies_nothing_twice(
    cloud: Cloud,
) -> None:
    """A byte changed in the first submission's line: exit 74 naming the line before any
    call, files untouched; ``--repair-state`` sets them aside, adopts what exists: 0 twice."""
    fleet(cloud)
    killed_with_copies_in_flight(cloud)
    line = damage_first_submission(cloud)
    before, requests = state_files(cloud), cloud.truth().requests
    stopped = cloud.run()
    assert stopped.returncode == 74, stopped.stderr
    assert f"journal.jsonl:{line}: not valid JSON" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert cloud.truth().requests == requests
    assert {k: v for k, v in state_files(cloud).items() if k != "events.jsonl"} == {
        k: v for k, v in before.items() if k != "events.jsonl"
    }
    repaired = cloud.run("--repair-state")
    assert repaired.returncode == 0, repaired.stderr
    assert cloud.truth().duplicates == ()
    assert sorted(p.name.split(".damaged-")[0] for p in cloud.state_dir.glob("*.damaged-*")) == [
        "checkpoint.json",
        "journal.jsonl",
    ]


def test_a_journal_cut_to_three_quarters_copies_nothing_twice(cloud: Cloud) -> None:
    """The journal of a killed run cut to 3/4 of its bytes: the lost lines' copies are found
    in the target by their tokens, not copied again."""
    fleet(cloud)
    killed_with_copies_in_flight(cloud)
    journal = cloud.state_dir / "journal.jsonl"
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) * 3 // 4])
    done = cloud.run()
    assert done.returncode == 0, done.stderr
    assert cloud.truth().duplicates == ()


def test_a_lock_removed_under_a_run_stops_it_and_the_next_run_copies_nothing_twice(
    cloud: Cloud,
) -> None:
    """``rm lock`` while run A holds it, then run B on the same state dir: A notices at its
    next write or submission and exits 75 naming the problem; B finishes: 0 duplicates."""
    fleet(cloud, rows=20)
    first = cloud.spawn()
    journal = cloud.state_dir / "journal.jsonl"
    deadline = time.monotonic() + 60
    while '"phase":"running"' not in (journal.read_text() if journal.exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (cloud.state_dir / "lock").unlink()
    second = cloud.run(timeout=120)
    assert first.wait(60) == 75
    log = (cloud.root / f"run-{cloud.seq}.log").read_text()
    # "removed" when A looks before B has locked a new file, "replaced" after: both are right.
    assert re.search(r"lock was (removed|replaced) while this run held it", log), log
    assert "Traceback" not in log
    assert second.returncode in (0, 75), second.stderr
    if second.returncode == 75:
        assert cloud.run().returncode == 0
    assert cloud.truth().duplicates == ()
    assert set(cloud.item_states().values()) == {"succeeded"}


@pytest.mark.timeout(300)
def test_kill_sweep_with_journal_damage_copies_nothing_twice(cloud: Cloud) -> None:
    """20 SIGKILLs over 90 items, half of them followed by a damaged journal (cut at a random
    byte, or a bad line found by the next run and set aside by --repair-state): 0 twice."""
    seed = seed_from_env()
    print(f"damage sweep seed: {seed} (replay with CRASH_SEED={seed})")  # noqa: T201
    cloud.params.update(seconds_per_gib=0.15, fixed_seconds=0.7, init_seconds=0.1)
    cloud.timing.update(settle=1, poll_max=0.5)
    cloud.populate(tenants=3, per_tenant=30, seed=seed)
    cloud.start()
    result = kill_sweep(cloud, 20, random.Random(seed), damage_share=0.5)
    print(f"seed {seed}: {result.cut} cut, {result.repaired} repaired")  # noqa: T201
    assert result.cut + result.repaired > 0
    assert result.history.violations == [], f"seed {seed}: {result.history.violations[:5]}"
    judge_finished(cloud, 90)
