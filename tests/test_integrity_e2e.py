"""The real CLI against the simulator when the state is wrong: a second state dir on the same
list, a damaged checkpoint or journal, a lost lock. Judged on the simulator's ground truth."""

from __future__ import annotations

import pytest

from orchestrator.simulator.harness import Cloud

pytestmark = pytest.mark.e2e


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
    assert truth["duplicates"] == []
    assert set(cloud.item_states().values()) == {"succeeded"}
