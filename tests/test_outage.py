"""A cloud that stops answering ends the run (``[timing] outage``), and a job whose polls keep
failing meets its deadline. ``main`` in process on virtual time against the in-memory cloud,
whose fault plan has an outage mode (503 or refused connections, for some regions)."""

from __future__ import annotations

import pytest

from tests.inprocess import LocalCloud

START = 1_800_000_000.0  # the DrivenClock's start
OUTAGE = 60


def two_targets(cloud: LocalCloud) -> None:
    """t0 copies to cn-east-3, t1 to cn-south-1 (the region that will stop answering)."""
    for name, target in (("t0", "cn-east-3"), ("t1", "cn-south-1")):
        cloud.account(name)
        for gib in (1, 2, 5):
            cloud.row(name, gib, target=target)


@pytest.mark.parametrize("mode", ["503", "refuse"])
def test_an_endpoint_down_for_the_outage_time_ends_the_run_with_75(
    local_cloud: LocalCloud, mode: str
) -> None:
    """cn-south-1 never answers: t0 finishes, t1 is left pending, exit 75 within the outage
    time (plus checks), a line names the endpoint and the last error."""
    cloud = local_cloud
    two_targets(cloud)
    cloud.timing["outage"] = OUTAGE
    cloud.faults = {
        "outage": {"from": 0, "until": START + 86400, "mode": mode, "regions": ["cn-south-1"]}
    }
    cloud.start()
    done = cloud.run()
    assert done.returncode == 75, done.stderr
    states = cloud.item_states()
    assert {s for k, s in states.items() if k.startswith("t0/")} == {"succeeded"}
    assert {s for k, s in states.items() if k.startswith("t1/")} == {"pending"}
    assert "ims/cn-south-1: no call succeeded for " in done.stderr
    assert ("503" if mode == "503" else "connection refused") in done.stderr
    assert cloud.clock.now() - START < 2 * OUTAGE
    assert cloud.truth().duplicates == ()


def test_the_next_run_resumes_once_the_endpoint_answers(local_cloud: LocalCloud) -> None:
    """After the outage the same command finishes the work: exit 0, no duplicate."""
    cloud = local_cloud
    two_targets(cloud)
    cloud.timing["outage"] = OUTAGE
    cloud.faults = {"outage": {"from": 0, "until": START + 3600, "regions": ["cn-south-1"]}}
    cloud.start()
    assert cloud.run().returncode == 75
    cloud.clock.advance(3600)
    again = cloud.run()
    assert again.returncode == 0, again.stderr
    assert cloud.truth().duplicates == ()


def test_a_job_whose_polls_keep_failing_meets_its_deadline(local_cloud: LocalCloud) -> None:
    """Every job poll fails (500), other calls answer: the item fails with JOB_DEADLINE after
    job_deadline instead of polling until --deadline."""
    cloud = local_cloud
    cloud.account("t0")
    cloud.row("t0", 1)
    cloud.faults = {"rates": {"job": {"500": 1.0}}}
    cloud.start()
    done = cloud.run("--deadline", "2h")
    assert done.returncode == 1, done.stderr
    report = (cloud.state_dir / "report.csv").read_text()
    assert "JOB_DEADLINE" in report
