"""``ims-migrate cleanup``: shows, then with --yes deletes, exactly the leftovers of the list's
copies; never an image without the tool's token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.commands.cleanup import lock_holder
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import item_key, item_token
from orchestrator.simulator.imageops import DELETE
from orchestrator.state.checkpoint import acquire_lock, release_lock
from tests.inprocess import LocalCloud

EAST = "cn-east-3"


def cleanup(cloud: LocalCloud, *extra: str) -> tuple[int, str]:
    done = cloud.main("cleanup", str(cloud.list_path), "--config", str(cloud.config_path), *extra)
    return done.returncode, done.stdout + done.stderr


def target_ids(cloud: LocalCloud) -> set[str]:
    assert cloud.world is not None
    return set(cloud.world.images.get(EAST, {}))


def test_cleanup_shows_then_deletes_exactly_the_leftovers(local_cloud: LocalCloud) -> None:
    """After a finished run: a killed copy and a duplicate carrying items' tokens are shown
    (exit 1, nothing deleted), then deleted with --yes (exit 0); a same-named image without a
    token and an image with the token of an item not in the list are never touched."""
    cloud = local_cloud
    cloud.account("t0")
    first = cloud.row("t0", 1)
    second = cloud.row("t0", 1)
    cloud.start()
    assert cloud.run().returncode == 0
    world = cloud.world
    assert world is not None
    token = item_token(item_key("t0", first, EAST))
    other = item_token(item_key("t0", second, EAST))
    stranger = item_token(item_key("t0", "not-listed", EAST))

    def put(status: str, description: str, name: str = "t0-img-0001") -> str:
        attrs = {"name": name, "status": status, "__description": description}
        return str(world.add_image("t0", EAST, attrs)["id"])

    killed = put("killed", f"[{token}]")
    duplicate = put("active", f"old copy [{other}]")
    untouched = {put("killed", "no token here"), put("killed", f"[{stranger}]")}
    before = target_ids(cloud)

    code, text = cleanup(cloud)
    assert code == 1, text
    assert killed in text
    assert duplicate in text
    assert not any(image in text for image in untouched)
    assert "run again with --yes" in text
    assert target_ids(cloud) == before

    code, text = cleanup(cloud, "--yes")
    assert code == 0, text
    assert target_ids(cloud) == before - {killed, duplicate}
    assert untouched <= target_ids(cloud)
    assert set(world.deleted) == {killed, duplicate}
    assert cleanup(cloud) == (0, "no leftover found in the target regions\n")


def test_a_failed_job_leaves_a_killed_copy_that_cleanup_finds(local_cloud: LocalCloud) -> None:
    """A copy job that fails leaves a killed image in the target (the simulator told so):
    cleanup lists it as the killed copy of a failed attempt and deletes it."""
    cloud = local_cloud
    cloud.params.update(fail_rate=1.0, leave_killed=True)
    cloud.account("t0")
    cloud.row("t0", 1)
    cloud.start()
    assert cloud.run().returncode == 1
    [leftover] = target_ids(cloud)
    code, text = cleanup(cloud)
    assert code == 1
    assert f"{leftover}  killed" in text
    assert "killed copy of a failed attempt" in text
    assert cleanup(cloud, "--yes")[0] == 0
    assert target_ids(cloud) == set()


def test_a_refused_delete_names_ims_images_delete(local_cloud: LocalCloud) -> None:
    """A 403 on the delete names the permission it needs (ims:images:delete), not the copy's."""
    cloud = local_cloud
    cloud.params.update(fail_rate=1.0, leave_killed=True)
    cloud.account("t0")
    cloud.row("t0", 1)
    cloud.start()
    assert cloud.run().returncode == 1
    assert cloud.world is not None
    cloud.world.deny("t0", DELETE)
    code, text = cleanup(cloud, "--yes")
    assert code == 1
    assert "grant ims:images:delete," in text
    assert "ims:images:copy" not in text


def test_cleanup_without_a_state_dir_is_a_usage_error(local_cloud: LocalCloud) -> None:
    """No checkpoint yet: exit 2, saying so."""
    cloud = local_cloud
    cloud.account("t0")
    cloud.row("t0", 1)
    cloud.start()
    code, text = cleanup(cloud)
    assert code == 2
    assert "no checkpoint" in text


@pytest.mark.parametrize("flag", ["--help"])
def test_cleanup_help_says_what_it_touches(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--help names the token rule, --yes and the exit codes."""
    from orchestrator.cli import main

    with pytest.raises(SystemExit):
        main(["cleanup", flag])
    text = capsys.readouterr().out
    for words in ("never touched", "--yes", "exit codes"):
        assert words in text


def test_cleanup_yes_deletes_nothing_while_a_run_holds_the_lock(local_cloud: LocalCloud) -> None:
    """While a run holds the state dir's lock, cleanup --yes deletes nothing: exit 75, the
    holder's pid named, try again when it ends; cleanup without --yes still shows. Once the
    lock is free, --yes deletes."""
    cloud = local_cloud
    cloud.params.update(fail_rate=1.0, leave_killed=True)
    cloud.account("t0")
    cloud.row("t0", 1)
    cloud.start()
    assert cloud.run().returncode == 1
    [leftover] = target_ids(cloud)
    held = acquire_lock(cloud.state_dir)  # what a run going on holds (this process: its pid)
    try:
        code, text = cleanup(cloud, "--yes")
        assert code == ExitCode.LATER, text
        assert f"pid {os.getpid()}" in text
        assert "try again when it ends" in text
        assert target_ids(cloud) == {leftover}
        code, text = cleanup(cloud)
        assert code == 1
        assert leftover in text
    finally:
        release_lock(held)
    assert cleanup(cloud, "--yes")[0] == 0
    assert target_ids(cloud) == set()


def test_lock_holder_reads_the_holder_not_a_waiter(tmp_path: Path) -> None:
    """/proc/locks: the FLOCK line of the lock file's device and inode gives the holder; a
    waiter ("->") or another file is not it; no line, no pid."""
    lock = tmp_path / "lock"
    lock.write_text("")
    found = lock.stat()
    where = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    text = (
        f"1: POSIX  ADVISORY  WRITE 11 {where} 0 EOF\n"
        f"2: FLOCK  ADVISORY  WRITE 22 {where}9 0 EOF\n"
        f"3: FLOCK  ADVISORY  WRITE 4242 {where} 0 EOF\n"
        f"3: -> FLOCK  ADVISORY  WRITE 33 {where} 0 EOF\n"
    )
    assert lock_holder(lock, text) == 4242
    assert lock_holder(lock, text.replace("4242", "x")) is None
    assert lock_holder(lock, "") is None
    assert lock_holder(tmp_path / "gone", text) is None


def test_a_bad_row_of_an_unknown_tenant_does_not_stop_cleanup(local_cloud: LocalCloud) -> None:
    """A row the list rejected (its tenant not configured) was never copied: cleanup looks at
    the other items' targets and does not ask for that tenant's credentials."""
    cloud = local_cloud
    cloud.params.update(fail_rate=1.0, leave_killed=True)
    cloud.account("t0")
    image = cloud.row("t0", 1)
    cloud.start()
    with cloud.list_path.open("a") as handle:
        handle.write(f"nobody,{image},cn-north-4,{EAST}\n")
    assert cloud.run().returncode == 1
    [leftover] = target_ids(cloud)
    code, text = cleanup(cloud)
    assert code == 1, text
    assert leftover in text
    assert cleanup(cloud, "--yes")[0] == 0
    assert target_ids(cloud) == set()
