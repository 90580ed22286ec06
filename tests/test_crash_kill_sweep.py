"""kill -9 at random moments, over and over, then resume: nothing copied twice, nothing lost
(not even a tag carried after the copy).

300 items over 3 tenants; the run is SIGKILLed 50 times after random delays (from inside Python's
start-up to well into the copies), and the state dir is read after every kill exactly as the
next run would read it: ``checkpoint.json`` must parse and no item may move backwards within an
attempt. Then runs go on until one exits 0. The seed is printed; ``CRASH_SEED=N`` replays it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from orchestrator.simulator.crash_harness import (
    judge_finished,
    kill_sweep,
    lost_tags,
    reap,
    seed_from_env,
    stray_files,
)
from orchestrator.simulator.harness import Cloud

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _reap_runs() -> Iterator[None]:
    """No run started in the background outlives its test (or its simulator)."""
    yield
    reap()


TENANTS, PER_TENANT, KILLS = 3, 100, 50


@pytest.mark.timeout(300)
def test_kill_9_sweep_loses_nothing_and_copies_nothing_twice(cloud: Cloud) -> None:
    """50 SIGKILLs at random moments of runs over 300 items: 0 duplicates, 0 lost, state sane."""
    seed = seed_from_env()
    print(f"kill sweep seed: {seed} (replay with CRASH_SEED={seed})")  # noqa: T201
    cloud.params.update(seconds_per_gib=0.15, fixed_seconds=0.7, init_seconds=0.1)
    cloud.timing.update(settle=1, poll_max=0.5)
    cloud.populate(tenants=TENANTS, per_tenant=PER_TENANT, seed=seed)
    for n, entry in enumerate(cloud.images):  # carried after the copy: none may be lost
        entry["image"].update(tags=["env.prod", f"n.{n}"], min_ram=512)
    cloud.start()
    result = kill_sweep(cloud, KILLS, random.Random(seed))
    print(  # noqa: T201
        f"seed {seed}: {result.kills} kills ({result.early_kills} in start-up), "
        f"{result.runs} runs, {result.clean_exits} ended by themselves, "
        f"{result.done_at_last_kill} items done at the last kill, {result.wall:.1f} s"
    )
    assert result.kills >= KILLS
    assert result.history.violations == [], f"seed {seed}: {result.history.violations[:5]}"
    judge_finished(cloud, TENANTS * PER_TENANT)
    assert lost_tags(cloud) == []


def test_temp_files_of_a_killed_write_are_swept_by_the_next_run(cloud: Cloud) -> None:
    """A run killed while writing the snapshot or the report leaves a temp file: the next run,
    under the lock, removes it."""
    cloud.populate(tenants=1, per_tenant=3)
    cloud.start()
    assert cloud.run().returncode == 0
    for name in (".checkpoint-killed", ".report-killed"):
        (cloud.state_dir / name).write_text("partial")
    cloud.list_path.write_text(cloud.list_path.read_text())  # the same list, run again
    assert cloud.run().returncode == 0
    assert stray_files(cloud.state_dir) == []
