"""Crash points: SIGKILL at each dangerous step for the first, a middle and the last item, then
resume without the switch: every item copied exactly once and succeeded, every copy with its
source's tags and min_ram (carried after the copy, engine/aftercopy.py).

``IMS_MIGRATE_CRASH_AT=NAME:N`` (orchestrator/crashpoints.py) kills the run the N-th time it
reaches NAME. Seven 1 GiB images in one tenant; a job ends (~0.2 s) before the first poll
(``poll_min`` 0.4 s), so each item is polled exactly once and the N-th ``polling`` is the N-th
item's. Every step but ``save`` is reached once per item, so N = 1, 4, 7 are the first, a middle
and the last item. ``save`` (the start of a journal write, before any byte is written) is reached
per group commit, so it is aimed by what the write holds: ``HARNESS_KILL_AT_SAVE`` of the crash
harness (``orchestrator/simulator/crash_harness.py``) kills at that same point of the save of
the first item's intent, the middle item's job id and the last item's success, with one copy slot
so that no write holds two items; ``save:1`` (the run's very first write) comes through the crash
switch itself.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from orchestrator.core.model import Phase
from orchestrator.simulator.crash_harness import (
    History,
    harness_args,
    judge_finished,
    lost_tags,
    run_to_end,
    set_cap,
)
from orchestrator.simulator.harness import Cloud
from orchestrator.state.checkpoint import read_snapshot

pytestmark = pytest.mark.e2e

ITEMS = 7
FIRST, MIDDLE, LAST = 1, 4, 7
STEPS = (
    "before_intent",
    "after_intent",
    "after_reply",
    "polling",
    "after_success",  # verifying entered (not saved: the job is), the slot released
    "verifying",
    "after_verify",  # carrying saved
    "after_tags",  # tags created, RAM not yet patched
    "after_terminal",
)
SAVES = {  # (phase the write holds, N): the save of ...
    "first-item-intent": ("submitting", FIRST),
    "middle-item-job-id": ("running", MIDDLE),
    "last-item-success": ("succeeded", LAST),
}
CASES = (
    [
        pytest.param({"IMS_MIGRATE_CRASH_AT": f"{step}:{n}"}, 5, id=f"{step}-{which}")
        for step in STEPS
        for which, n in (("first", FIRST), ("middle", MIDDLE), ("last", LAST))
    ]
    + [
        pytest.param({"HARNESS_KILL_AT_SAVE": f"{phase}:{n}"}, 1, id=f"save-{which}")
        for which, (phase, n) in SAVES.items()
    ]
    + [pytest.param({"IMS_MIGRATE_CRASH_AT": "save:1"}, 5, id="save-first-write-of-the-run")]
)


def small_cloud(cloud: Cloud) -> None:
    cloud.params.update(seconds_per_gib=0.01, fixed_seconds=0.1, init_seconds=0.05)
    cloud.timing.update(poll_min=0.4, poll_max=1, settle=0.5)
    cloud.account("t0")
    for n in range(ITEMS):
        cloud.row("t0", 1, tags=["env.prod", f"n.{n}"], min_ram=1024)


@pytest.mark.parametrize(("switch", "cap"), CASES)
def test_kill_at_crash_point_then_resume(cloud: Cloud, switch: dict[str, str], cap: int) -> None:
    """A kill at this step of this item loses nothing and copies nothing twice after resume."""
    small_cloud(cloud)
    cloud.start()
    set_cap(cloud, cap)
    crashed = subprocess.run(
        harness_args(cloud), env=cloud.env(**switch), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    json.loads((cloud.state_dir / "checkpoint.json").read_text())
    history = History()
    history.observe(cloud.state_dir, f"killed at {switch}")
    run_to_end(cloud, history)
    assert history.violations == []
    truth = judge_finished(cloud, ITEMS)
    assert set(truth.submissions.values()) == {1}
    assert lost_tags(cloud) == []


def test_kill_at_the_save_of_a_verdict_with_nothing_to_carry(cloud: Cloud) -> None:
    """Untagged sources whose copies keep their RAM limits: verifying's verdict is saved with
    ``succeeded`` (no ``carrying`` save), and ``verifying`` itself is not saved when nothing
    waits (the checkpoint keeps the job). A kill at the start of that one write (the middle
    item's) loses nothing: the resumed run polls that item's job again (SUCCESS), verifies it
    and ends it succeeded, verified, every copy made once."""
    cloud.params.update(seconds_per_gib=0.01, fixed_seconds=0.1, init_seconds=0.05)
    cloud.timing.update(poll_min=0.4, poll_max=1, settle=0.5)
    cloud.account("t0")
    for _ in range(ITEMS):
        cloud.row("t0", 1)
    cloud.start()
    set_cap(cloud, 1)
    crashed = subprocess.run(
        harness_args(cloud), env=cloud.env(HARNESS_KILL_AT_SAVE=f"succeeded:{MIDDLE}"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    history = History()
    phases = history.observe(cloud.state_dir, "killed at the middle item's verdict")
    killed = [key for key, phase in phases.items() if phase == Phase.RUNNING]
    assert len(killed) == 1  # nothing after its job id was written: it resumes polling
    assert Phase.VERIFYING not in phases.values()
    run_to_end(cloud, history)
    assert history.violations == []
    truth = judge_finished(cloud, ITEMS)
    assert set(truth.submissions.values()) == {1}
    lines = (cloud.state_dir / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert not [e for e in events if e.get("event") == "item.carrying"]
    ends = [e["item"] for e in events if e.get("event") == "item.succeeded"]
    assert sorted(ends) == sorted(phases)  # each item once, the killed one too
    made = [e["item"] for e in events if e.get("event") == "item.verifying"]
    assert sorted(made) == sorted([*phases, *killed])  # the killed one's job seen ended twice
    snap = read_snapshot(cloud.state_dir)
    assert snap is not None
    assert {item.get("verify") for item in snap["items"].values()} == {"ok"}
