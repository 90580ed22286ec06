"""The CLI end to end: happy path, no-op, bad list, status and report in process on virtual time
against the in-memory cloud; kill -9 and resume, the lock and SIGTERM as real processes against
the simulator on 127.0.0.1."""

import json
import signal
import time

import pytest

from orchestrator.simulator.harness import Cloud
from tests.inprocess import LocalCloud


def assert_no_secret_written(sim: Cloud) -> None:
    secrets = [a["secret_key"] for a in sim.accounts]
    for path in sim.state_dir.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert not any(s.encode() in text for s in secrets), path


def test_happy_path_migrates_everything(local_cloud: LocalCloud) -> None:
    """A 30-row list over 2 tenants: exit 0, all succeeded, cap and no duplicates held."""
    cloud = local_cloud
    cloud.populate(tenants=2, per_tenant=15)
    cloud.start()
    done = cloud.run()
    assert done.returncode == 0, done.stderr
    truth = cloud.truth()
    assert truth.duplicates == ()
    assert max(truth.max_in_flight.values()) <= 5
    assert truth.copies_total == 30
    assert set(cloud.item_states().values()) == {"succeeded"}
    report = (cloud.state_dir / "report.csv").read_text().splitlines()
    assert len(report) == 31
    events_text = (cloud.state_dir / "events.jsonl").read_text()
    events = [json.loads(line) for line in events_text.splitlines()]
    assert sum(e["event"] == "item.succeeded" for e in events) == 30
    assert_no_secret_written(cloud)


def test_second_run_is_a_no_op(local_cloud: LocalCloud) -> None:
    """Running a finished list again makes no call at all and exits as before."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=4)
    cloud.start()
    assert cloud.run().returncode == 0
    before = cloud.truth().requests
    again = cloud.run()
    assert again.returncode == 0, again.stderr
    assert cloud.truth().requests == before


@pytest.mark.e2e
def test_kill_9_then_resume_has_no_duplicate(cloud: Cloud) -> None:
    """SIGKILL in the middle of a run; the next run adopts the jobs and finishes, 0 duplicates."""
    cloud.params["seconds_per_gib"] = 0.05
    cloud.populate(tenants=2, per_tenant=12)
    cloud.start()
    first = cloud.spawn()
    deadline = time.monotonic() + 30
    while cloud.truth().copies_total < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    json.loads((cloud.state_dir / "checkpoint.json").read_text())  # parseable after the kill
    second = cloud.run()
    assert second.returncode == 0, second.stderr
    truth = cloud.truth()
    assert truth.duplicates == ()
    assert truth.copies_total == 24
    assert set(cloud.item_states().values()) == {"succeeded"}


@pytest.mark.e2e
def test_second_run_while_first_holds_the_lock_exits_75(cloud: Cloud) -> None:
    """One run at a time: a concurrent run exits 75 at once."""
    cloud.params["seconds_per_gib"] = 0.3  # slow enough that the first run outlives the second
    cloud.populate(tenants=1, per_tenant=12)
    cloud.start()
    first = cloud.spawn()
    deadline = time.monotonic() + 20
    while cloud.truth().copies_total < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    second = cloud.run(timeout=30)
    assert second.returncode == 75
    assert "another run holds" in second.stderr
    assert time.monotonic() - started < 10
    first.wait(60)
    assert first.returncode == 0


@pytest.mark.e2e
def test_sigterm_stops_submitting_and_exits_75(cloud: Cloud) -> None:
    """SIGTERM: exit 75 within seconds; the resumed run finishes with no duplicate."""
    cloud.params["seconds_per_gib"] = 0.1
    cloud.populate(tenants=1, per_tenant=12)
    cloud.start()
    first = cloud.spawn()
    deadline = time.monotonic() + 20
    while cloud.truth().copies_total < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    signalled = time.monotonic()
    first.send_signal(signal.SIGTERM)
    first.wait(20)
    assert first.returncode == 75
    assert time.monotonic() - signalled < 10
    assert_no_copy_request_after_the_stop(cloud)
    assert cloud.run().returncode == 0
    assert cloud.truth().duplicates == ()


def assert_no_copy_request_after_the_stop(cloud: Cloud) -> None:
    """The run's events: an intent saved after ``run.stopping`` is taken back unsent."""
    lines = (cloud.state_dir / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    stop = next(n for n, e in enumerate(events) if e["event"] == "run.stopping")
    assert "SIGTERM" in events[stop]["reason"]
    after = events[stop:]
    intents = {e["item"] for e in after if e["event"] == "item.submitting"}
    taken_back = {e["item"] for e in after if e.get("detail") == "stopped before sending"}
    assert intents <= taken_back


def test_unreadable_list_exits_2_before_any_call(local_cloud: LocalCloud) -> None:
    """A list with a missing required column: exit 2, file and problem named, no request."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=2)
    cloud.start()
    cloud.list_path.write_text("tenant,image_id,target_region\nt0,abc,cn-east-3\n")
    done = cloud.run()
    assert done.returncode == 2
    assert "migration.csv" in done.stderr
    assert "source_region" in done.stderr
    assert sum(cloud.truth().requests.values()) == 0


def test_status_and_report_read_the_checkpoint(local_cloud: LocalCloud) -> None:
    """status and report work from the state dir without calling the cloud."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=3)
    cloud.start()
    assert cloud.run().returncode == 0
    requests = cloud.truth().requests
    status = cloud.main("status", str(cloud.list_path))
    assert status.returncode == 0, status.stderr
    assert "succeeded" in status.stdout
    report = cloud.main("report", "--state-dir", str(cloud.state_dir), "--format", "json")
    document = json.loads(report.stdout)
    assert document["summary"]["by_state"]["succeeded"] == 3
    assert cloud.truth().requests == requests
