"""The simulator's calls after a copy (tags, PATCH, members, DELETE) and its copy's flaws."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.cloud import ErrorKind
from orchestrator.simulator.imageops import GET, LIST, UPDATE
from orchestrator.simulator.world import World
from tests.test_simulator_app import EAST, NORTH, Sim, sim  # noqa: F401
from tests.test_simulator_inmemory import expect_error, make, request, src

pytestmark = pytest.mark.timeout(10)


def tags_path(front: Sim, image_id: str, region: str = NORTH) -> str:
    return f"/ims/{region}/v2/{front.projects[region]}/images/{image_id}/tags"


def copied(world: World, now: float) -> dict[str, Any]:
    job = next(iter(world.jobs.values()))
    image = world.image(job.target_region, job.target_image_id, now)
    assert image is not None
    return image


async def test_a_copy_drops_tags_and_ram_limits() -> None:
    """A copy keeps the file's attributes but not the source's tags nor min_ram/max_ram."""
    world, cloud, now = make()
    source = src(world, tags=["env.prod"], min_ram=2048, max_ram=8192, checksum="abc")
    await cloud.copy_image(NORTH, source, request())
    image = copied(world, now.value + 100)
    assert (image["tags"], image["min_ram"], image.get("max_ram")) == ([], 0, None)
    assert image["checksum"] == "abc"


async def test_differ_copies_makes_a_copy_unlike_its_source() -> None:
    """differ_copies gives the next copies of one source other attributes (a mismatch)."""
    world, cloud, now = make()
    source = src(world, checksum="abc")
    world.differ_copies(source, {"checksum": "def", "__os_bit": "32"})
    await cloud.copy_image(NORTH, source, request())
    image = copied(world, now.value + 100)
    assert (image["checksum"], image["__os_bit"]) == ("def", "32")


async def test_leave_killed_keeps_a_failed_copy_in_the_target() -> None:
    """With leave_killed, a failed job's copy stays listed as killed even when copies show
    only at the end."""
    world, cloud, now = make(leave_killed=True, visibility="at_end", fail_rate=1.0)
    await cloud.copy_image(NORTH, src(world), request())
    now.value += 100
    images = await cloud.list_images(EAST)
    assert [image.status for image in images] == ["killed"]


async def test_in_memory_tags_patch_members_and_delete() -> None:
    """Tags are created/overwritten, RAM patched, members listed, an image deleted."""
    world, cloud, _ = make()
    source = src(world, tags=["env.prod"])
    world.share(source, ["p1", "p2"])
    assert await cloud.image_tags(NORTH, source) == {"env": "prod"}
    await cloud.add_image_tags(NORTH, source, {"env": "test", "team": "a"})
    assert await cloud.image_tags(NORTH, source) == {"env": "test", "team": "a"}
    await cloud.update_image(NORTH, source, {"min_ram": 1024, "max_ram": 4096})
    [image] = await cloud.list_images(NORTH, image_id=source)
    assert ("min_ram", "1024") in image.facts
    assert ("max_ram", "4096") in image.facts
    assert await cloud.image_members(NORTH, source) == ["p1", "p2"]
    await cloud.delete_image(NORTH, source)
    assert await cloud.list_images(NORTH) == []
    assert world.deleted == [source]
    error = await expect_error(cloud.delete_image(NORTH, source))
    assert error.kind == ErrorKind.NOT_FOUND


async def test_a_denied_tag_call_is_a_403() -> None:
    """deny() refuses one action to the account: 403, the policy named."""
    world, cloud, _ = make()
    source = src(world)
    world.deny("acme", UPDATE)
    error = await expect_error(cloud.add_image_tags(NORTH, source, {"a": "b"}))
    assert (error.status, error.kind) == (403, ErrorKind.AUTH)
    assert "Policy doesn't allow ims:images:update to be performed." in error.message


async def test_denials_use_the_real_iam_actions() -> None:
    """The real cloud's actions (docs/ims-api.md §10): ims:images:update refuses both adding
    tags and the PATCH of the RAM limits; ims:images:list refuses reading tags; ims:images:get
    refuses reading members. Each 403 names the real action, never an invented one."""
    world, cloud, _ = make()
    source = src(world)
    assert (UPDATE, LIST, GET) == ("ims:images:update", "ims:images:list", "ims:images:get")
    world.deny("acme", "ims:images:update")
    for call in (
        cloud.add_image_tags(NORTH, source, {"a": "b"}),
        cloud.update_image(NORTH, source, {"min_ram": 1024}),
    ):
        error = await expect_error(call)
        assert (error.status, "ims:images:update to be" in error.message) == (403, True)
    assert await cloud.image_members(NORTH, source) == []
    assert await cloud.image_tags(NORTH, source) == {}
    world.deny("acme", "ims:images:list")
    error = await expect_error(cloud.image_tags(NORTH, source))
    assert (error.status, "ims:images:list to be" in error.message) == (403, True)
    world.deny("acme", "ims:images:get")
    error = await expect_error(cloud.image_members(NORTH, source))
    assert (error.status, "ims:images:get to be" in error.message) == (403, True)


async def test_http_deny_takes_iam_actions(sim: Sim) -> None:  # noqa: F811
    """POST /_sim/deny {"account", "actions": [...]} refuses those IAM actions on the calls
    after a copy (403 naming the action); an empty list grants them again."""
    answer = await sim.admin("POST", "/_sim/deny", {"account": "acme", "actions": [UPDATE]})
    assert answer == {"denied": [], "actions": [UPDATE]}
    patch = f"/ims/{NORTH}/v2/cloudimages/{sim.image_id}"
    body = [{"op": "replace", "path": "/min_ram", "value": 2048}]
    status, refused, _ = await sim.call("PATCH", patch, payload=body)
    assert status == 403
    assert refused["error"]["message"] == "Policy doesn't allow ims:images:update to be performed."
    await sim.admin("POST", "/_sim/deny", {"account": "acme", "actions": []})
    status, _, _ = await sim.call("PATCH", patch, payload=body)
    assert status == 200


async def test_http_tag_calls_have_the_documented_shapes(sim: Sim) -> None:  # noqa: F811
    """GET tags answers {"tags": [{key, value}]}; POST tags/action create answers 204."""
    path = tags_path(sim, sim.image_id)
    status, body, _ = await sim.call(
        "POST", path + "/action", payload={"action": "create", "tags": [{"key": "k", "value": "v"}]}
    )
    assert (status, body) == (204, None)
    status, body, _ = await sim.call("GET", path)
    assert (status, body) == (200, {"tags": [{"key": "k", "value": "v"}]})
    status, body, _ = await sim.call(
        "POST", path + "/action", payload={"action": "Create", "tags": [{"key": "k"}]}
    )
    assert (status, body["error"]["code"]) == (400, "IMG.0001")


async def test_http_patch_members_and_delete(sim: Sim) -> None:  # noqa: F811
    """PATCH replaces min_ram; members lists the shares; DELETE is 204 and the image is gone."""
    sim.world.share(sim.image_id, ["p1"])
    status, image, _ = await sim.call(
        "PATCH",
        f"/ims/{NORTH}/v2/cloudimages/{sim.image_id}",
        payload=[{"op": "replace", "path": "/min_ram", "value": 2048}],
    )
    assert (status, image["min_ram"]) == (200, 2048)
    members = f"/ims/{NORTH}/v1/{sim.projects[NORTH]}/cloudimages/{sim.image_id}/members"
    status, body, _ = await sim.call("GET", members)
    assert (status, [m["member_id"] for m in body["members"]]) == (200, ["p1"])
    status, body, _ = await sim.call("DELETE", f"/ims/{NORTH}/v2/images/{sim.image_id}")
    assert (status, body) == (204, None)
    status, body, _ = await sim.call("GET", f"/ims/{NORTH}/v2/cloudimages")
    assert body["images"] == []
