"""One run at a time, and a graceful stop on SIGTERM / SIGINT, judged on the simulator's record.

The lock: two runs started together on one state dir, 20 times: one proceeds, the other exits 75
within seconds having written nothing there but the lock (every open for writing, rename and
removal it makes in the state dir is recorded through a Python audit hook); after ``kill -9`` of
the holder the next run gets the lock at once.

The signals: once the stop is handled (``run.stopping`` in ``events.jsonl``) no copy POST is sent:
every POST the simulator saw belongs to an intent saved before the stop. The signal comes at a
moment of the copies (on a slow disk: each fsync 20 ms), and also exactly while an intent is
being saved (``HARNESS_SIGNAL_AT_SAVE``), the case where a POST used to slip out after the stop.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator.crash_harness import (
    History,
    copy_posts,
    judge_finished,
    reap,
    run_to_end,
    spawn,
)
from orchestrator.simulator.harness import Cloud
from orchestrator.state.checkpoint import read_snapshot

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _reap_runs() -> Iterator[None]:
    """No run started in the background outlives its test (or its simulator)."""
    yield
    reap()


ROUNDS = 20


def events(state_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (state_dir / "events.jsonl").read_text().splitlines()]


def audit(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def writes_besides_the_lock(records: list[dict[str, Any]], state_dir: Path) -> list[Any]:
    """What a run wrote in the state dir, apart from opening the lock (and making the dir)."""
    lock, folder = str((state_dir / "lock").resolve()), str(state_dir.resolve())
    allowed = {("open", lock), ("os.mkdir", folder)}
    return [r for r in records if any((r["event"], p) not in allowed for p in r["paths"])]


def wrote(log: Path, state_dir: Path) -> Callable[[], bool]:
    return lambda: bool(writes_besides_the_lock(audit(log), state_dir))


def any_exited(processes: list[subprocess.Popen[bytes]]) -> Callable[[], bool]:
    return lambda: any(process.poll() is not None for process in processes)


def posts_reach(cloud: Cloud, count: int) -> Callable[[], bool]:
    return lambda: len(copy_posts(cloud)) >= count


def wait_for(predicate: Callable[[], Any], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- one run at a time ---------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_two_runs_started_together_one_proceeds_the_other_exits_75(cloud: Cloud) -> None:
    """20 pairs on one state dir: one holds the lock, the other exits 75 at once, writes nothing."""
    cloud.params.update(seconds_per_gib=6.0, fixed_seconds=0.5, init_seconds=0.1)
    cloud.timing.update(job_deadline=3600)
    cloud.account("t0")
    for _ in range(40):
        cloud.row("t0", 10)  # a minute per copy: the list never finishes during the rounds
    cloud.start()
    base = cloud.env(HARNESS_AUDIT_DIR=str(cloud.state_dir))
    for round_ in range(ROUNDS):
        logs = [cloud.root / f"audit-{round_}-{n}.jsonl" for n in (0, 1)]
        started = time.monotonic()
        pair = [spawn(cloud, {**base, "HARNESS_AUDIT": str(log)}) for log in logs]
        wait_for(any_exited(pair), 20, "one run to exit")
        loser = next(n for n, p in enumerate(pair) if p.poll() is not None)
        winner = 1 - loser
        exited = time.time()
        assert pair[loser].returncode == 75, f"round {round_}"
        assert time.monotonic() - started < 15, f"round {round_}: the loser took too long"
        lock_seen = min(r["t"] for r in audit(logs[loser]))
        assert exited - lock_seen < 5, f"round {round_}: the loser did not exit at once"
        assert pair[winner].poll() is None, f"round {round_}: both runs ended"
        assert writes_besides_the_lock(audit(logs[loser]), cloud.state_dir) == [], round_
        wait_for(wrote(logs[winner], cloud.state_dir), 20, "the winner to write its state")
        pair[winner].send_signal(signal.SIGKILL)  # the next pair recovers from it
        pair[winner].wait(10)
    # kill -9 of the holder: the next run gets the lock at once.
    holder_log, next_log = cloud.root / "audit-holder.jsonl", cloud.root / "audit-next.jsonl"
    holder = spawn(cloud, {**base, "HARNESS_AUDIT": str(holder_log)})
    wait_for(wrote(holder_log, cloud.state_dir), 20, "the holder to write its state")
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    started = time.monotonic()
    successor = spawn(cloud, {**base, "HARNESS_AUDIT": str(next_log)})
    wait_for(
        lambda: (
            successor.poll() is not None
            or writes_besides_the_lock(audit(next_log), cloud.state_dir)
        ),
        20,
        "the next run to take the lock",
    )
    assert successor.poll() is None, "the next run did not get the lock"
    assert time.monotonic() - started < 15
    successor.send_signal(signal.SIGKILL)
    successor.wait(10)
    assert cloud.truth().duplicates == ()


# -- SIGTERM / SIGINT ----------------------------------------------------------------------------


def assert_no_post_after_the_stop(cloud: Cloud, lines_before: int, posts_before: int) -> None:
    """Every copy POST of the run was preceded by an intent saved before ``run.stopping``."""
    mine = events(cloud.state_dir)[lines_before:]
    stop = next((n for n, e in enumerate(mine) if e["event"] == "run.stopping"), None)
    assert stop is not None, "the stop was not logged"
    intents = Counter(e["item"] for e in mine[:stop] if e["event"] == "item.submitting")
    assert len(copy_posts(cloud)) - posts_before <= sum(intents.values()), "a POST after the stop"
    snap = read_snapshot(cloud.state_dir)
    assert snap is not None
    assert snap["meta"]["last_exit"] == 75


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_posting_saves_and_exits_75(cloud: Cloud, signum: signal.Signals) -> None:
    """After the stop is handled no POST is sent; exit 75 within seconds; resume: no duplicate."""
    cloud.params.update(seconds_per_gib=0.02, fixed_seconds=0.2, init_seconds=0.05)
    cloud.timing.update(settle=0.5)
    cloud.populate(tenants=2, per_tenant=20)
    cloud.start()
    history = History()
    for round_ in range(2):
        posts_before = len(copy_posts(cloud))
        lines_before = len(events(cloud.state_dir)) if cloud.state_dir.exists() else 0
        run = spawn(cloud, cloud.env(HARNESS_FSYNC_DELAY="0.02"))  # a slow disk
        wait_for(posts_reach(cloud, posts_before + 3 + 4 * round_), 20, "POSTs")
        signalled = time.monotonic()
        run.send_signal(signum)
        code = run.wait(15)
        assert code == 75, (code, (cloud.root / f"run-{cloud.seq}.log").read_text())
        assert time.monotonic() - signalled < 10
        assert_no_post_after_the_stop(cloud, lines_before, posts_before)
        history.observe(cloud.state_dir, f"after signal {round_}")
    run_to_end(cloud, history)
    assert history.violations == []
    judge_finished(cloud, 40)


@pytest.mark.parametrize(("name", "nth"), [("SIGTERM", 1), ("SIGINT", 3)])
def test_signal_during_an_intent_save_sends_no_post(cloud: Cloud, name: str, nth: int) -> None:
    """A stop handled while an intent is being saved: that item's POST is never sent."""
    cloud.params.update(seconds_per_gib=0.0, fixed_seconds=0.1, init_seconds=0.0)
    cloud.timing.update(settle=0.5)
    cloud.populate(tenants=1, per_tenant=12)
    cloud.start()
    mark = cloud.root / "signalled"
    env = cloud.env(HARNESS_SIGNAL_AT_SAVE=f"{name}:submitting:{nth}", HARNESS_MARK=str(mark))
    run = spawn(cloud, env)
    assert run.wait(30) == 75, (cloud.root / f"run-{cloud.seq}.log").read_text()
    assert "while saving submitting" in mark.read_text()
    assert_no_post_after_the_stop(cloud, 0, 0)
    run_to_end(cloud)
    judge_finished(cloud, 12)
