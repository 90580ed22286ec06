"""The operator's controls from the CLI: quiet cron runs, plain progress, --retry-failed,
--max-failures, --deadline, the filters, --metrics-file, and messages that say the same thing in
the terminal and in events.jsonl. In process on virtual time against the in-memory cloud, but
for a lock held by another process (the real CLI in a subprocess)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.simulator.harness import Cloud
from orchestrator.simulator.world import World
from orchestrator.state.checkpoint import acquire_lock, release_lock
from tests.inprocess import LocalCloud


def events(cloud: Cloud) -> list[dict[str, Any]]:
    text = (cloud.state_dir / "events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


# -- cron: quiet, progress, lock -----------------------------------------------------------------


def test_quiet_success_prints_nothing_at_all(local_cloud: LocalCloud) -> None:
    """--quiet and every item succeeded: not one byte on stdout or stderr (cron mails nothing)."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=3)
    cloud.start()
    done = cloud.run("--quiet")
    assert done.returncode == 0
    assert (done.stdout, done.stderr) == ("", "")


def test_quiet_still_says_what_needs_a_look_in_the_words_of_the_log(
    local_cloud: LocalCloud,
) -> None:
    """A bad row with --quiet: exit 1, the row named with what to do, the same words logged."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=2)
    cloud.start()
    with cloud.list_path.open("a") as handle:
        handle.write(f"t0,{cloud.image('t0', 1)},cn-north-4,cn-north-4\n")
    done = cloud.run("--quiet")
    assert done.returncode == 1
    assert done.stdout == ""
    bad = next(e for e in events(cloud) if e["event"] == "list.bad_row")
    assert bad["error_message"] in done.stderr
    assert "migration.csv:4: target_region" in bad["error_message"]
    finished = next(e for e in events(cloud) if e["event"] == "run.finished")
    assert f"Next: {finished['advice']}" in done.stderr


@pytest.mark.e2e
def test_quiet_run_while_the_lock_is_held_exits_75_silently(cloud: Cloud) -> None:
    """Another run holds the lock: exit 75, nothing printed with --quiet, a line without it."""
    cloud.populate(tenants=1, per_tenant=1)
    cloud.write_list()  # no simulator: the lock is tried before anything else
    cloud.write_config()
    fd = acquire_lock(cloud.state_dir)
    try:
        quiet = cloud.run("--quiet")
        loud = cloud.run()
    finally:
        release_lock(fd)
    assert quiet.returncode == 75
    assert (quiet.stdout, quiet.stderr) == ("", "")
    assert loud.returncode == 75
    assert "another run holds" in loud.stderr
    assert "run the same command again later" in loud.stderr


def test_not_a_terminal_gets_plain_progress_lines_on_stderr(local_cloud: LocalCloud) -> None:
    """stderr is not a terminal: plain progress lines there (start and end), summary on stdout."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=3)
    cloud.start()
    done = cloud.run()
    assert done.returncode == 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("progress ")]
    assert lines[0].startswith("progress 0/3 done")
    assert lines[-1].startswith("progress 3/3 done: 3 succeeded")
    assert "\x1b[" not in done.stderr  # no terminal control codes in a log file
    assert "exit 0: every item succeeded" in done.stdout


def test_refused_credentials_are_said_alike_in_the_terminal_and_the_log(
    local_cloud: LocalCloud,
) -> None:
    """A wrong secret key: exit 1, the variables to fix named, in the words of events.jsonl."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=2)
    cloud.start()
    done = cloud.run(env=cloud.env(E2E_T0_SK="wrong-secret-key-000000000000000"))
    assert done.returncode == 1
    blocked = next(e for e in events(cloud) if e["event"] == "tenant.blocked")
    assert "E2E_T0_AK and E2E_T0_SK" in blocked["advice"]
    assert blocked["advice"] in done.stderr


# -- control -------------------------------------------------------------------------------------


def test_retry_failed_is_needed_to_retry_and_then_succeeds(local_cloud: LocalCloud) -> None:
    """A failed copy stays failed on a plain rerun (no call); --retry-failed copies it again."""
    cloud = local_cloud
    cloud.params["seconds_per_gib"] = 0.2
    cloud.account("t0")
    for _ in range(2):
        cloud.row("t0", 10)
    cloud.start()
    failed: list[str] = []

    def fail_a_running_copy(world: World, now: float) -> None:
        """The cloud fails the first copy it is seen running (a disk error), once."""
        running = [c.job_id for c in world.truth(now).copies if c.status == "RUNNING"]
        if running and not failed:
            world.fail_job(running[0], now, code="IMG.0500", reason="disk error")
            failed.append(running[0])

    cloud.watch = fail_a_running_copy
    first = cloud.run()
    assert first.returncode == 1, first.stderr
    assert failed
    cloud.watch = None
    requests = cloud.truth().requests
    again = cloud.run()
    assert again.returncode == 1
    assert "already finished" in again.stdout
    assert "--retry-failed" in again.stdout
    assert cloud.truth().requests == requests  # no call at all
    retried = cloud.run("--retry-failed")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert cloud.truth().copies_total == 3
    assert set(cloud.item_states().values()) == {"succeeded"}
    assert any(e["event"] == "item.retry" for e in events(cloud))


def test_max_failures_stops_submitting_and_follows_running_copies(local_cloud: LocalCloud) -> None:
    """Every copy fails: after N (or P%) failures nothing more is submitted; exit 1."""
    cloud = local_cloud
    cloud.params["fail_rate"] = 1.0
    cloud.account("t0")
    for _ in range(12):
        cloud.row("t0", 1)
    cloud.start()
    done = cloud.run("--max-failures", "2")
    assert done.returncode == 1
    assert "failure threshold reached" in done.stdout
    copies = cloud.truth().copies_total
    assert 2 <= copies < 12
    states = cloud.item_states().values()
    assert "pending" in states
    assert "running" not in states  # the copies in flight were followed to their end
    ratio = cloud.run("--max-failures", "10%", "--state-dir", str(cloud.root / "ratio.state"))
    assert ratio.returncode == 1
    assert "failure threshold reached" in ratio.stdout
    assert cloud.truth().copies_total - copies < 12


def test_deadline_stops_and_exits_75_with_work_left(local_cloud: LocalCloud) -> None:
    """--deadline 1s on copies of 20 s: exit 75 while they still run, saying to run again."""
    cloud = local_cloud
    cloud.params["seconds_per_gib"] = 1.0
    cloud.account("t0")
    for _ in range(3):
        cloud.row("t0", 20)
    cloud.start()
    done = cloud.run("--deadline", "1s")
    assert done.returncode == 75
    assert "run deadline reached" in done.stdout
    assert "run the same command again later" in done.stdout
    phases = set(cloud.item_states().values())
    assert phases <= {"submitting", "running", "reconciling"}  # stopped before any copy ended
    assert {c.status for c in cloud.truth().copies} <= {"INIT", "RUNNING"}


def test_filters_narrow_a_run(local_cloud: LocalCloud) -> None:
    """--tenant, --source-region and --target-region each copy only the rows they name."""
    cloud = local_cloud
    for name in ("t0", "t1"):
        cloud.account(name)
    t0_east = cloud.row("t0", 1, target="cn-east-3")
    t0_south = cloud.row("t0", 1, target="cn-south-1")
    t1_east = cloud.row("t1", 1, target="cn-east-3")
    t1_other = cloud.row("t1", 1, target="cn-east-3", region="cn-south-1")
    cloud.rows[-1]["source_region"] = "cn-south-1"
    cloud.start()

    def copied() -> set[str]:
        return {c.image_id for c in cloud.truth().copies}

    assert cloud.run("--tenant", "t0", "--target-region", "cn-south-1").returncode == 0
    assert copied() == {t0_south}
    assert len(cloud.item_states()) == 4  # the rows no filter chose are tracked, as pending
    assert cloud.run("--tenant", "t1", "--source-region", "cn-south-1").returncode == 0
    assert copied() == {t0_south, t1_other}
    report = (cloud.state_dir / "report.csv").read_text()
    assert report.count(",pending,") == 2  # the rows no filter chose yet
    assert t0_east in report
    assert t1_east in report


def test_metrics_file_after_a_run(local_cloud: LocalCloud) -> None:
    """--metrics-file: the Prometheus file says how many items succeeded and the exit code."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=3)
    cloud.start()
    metrics = cloud.root / "textfile" / "ims.prom"
    missing = cloud.run("--metrics-file", str(metrics))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    assert sum(cloud.truth().requests.values()) == 0
    metrics.parent.mkdir()
    assert cloud.run("--metrics-file", str(metrics)).returncode == 0
    text = metrics.read_text()
    listed = f'list="{cloud.list_path}"'
    assert f'ims_migrate_items{{{listed},tenant="t0",state="succeeded"}} 3' in text
    assert f"ims_migrate_last_run_exit_code{{{listed}}} 0" in text
    assert f"ims_migrate_run_in_progress{{{listed}}} 0" in text
