"""The cloud is the truth, the checkpoint an optimisation (design I2): whatever a state dir says,
no item is copied while its token is in the target region. Judged on the world's ground truth."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import anyio

from orchestrator.core.cloud import CopyRequest, Image, TenantCloud
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Item, Phase
from orchestrator.core.outcome import merge_list
from orchestrator.core.request_text import describe_copy
from orchestrator.engine.scheduler import Engine, RunOptions, store_merged
from orchestrator.engine.targets import Found, TargetIndex
from orchestrator.state.store import InMemoryStore
from tests.engine_harness import CONFIG, SOURCE, TARGET, Scene

OTHER_TARGET = "cn-south-1"


def scene_of(
    rows: int, tenants: tuple[str, ...] = ("acme",), targets: tuple[str, ...] = (TARGET,)
) -> Scene:
    scene = Scene()
    for tenant in tenants:
        scene.account(tenant)
        for n in range(rows):
            scene.row(tenant, 10 + n, target=targets[n % len(targets)])
    return scene


async def stopped_early(scene: Scene) -> None:
    """A run that submits what the cap allows and stops: the rest stays pending, checked."""
    await scene.run(options=RunOptions(deadline_at=scene.clock.now() + 1.0))
    assert any(item.phase == Phase.PENDING and item.copy_name for item in scene.items())


async def test_a_second_state_dir_then_the_first_resumed_makes_no_duplicate() -> None:
    """The list run to the end through another state dir, then the first one resumed."""
    scene = scene_of(8)
    await stopped_early(scene)
    first = scene.store
    scene.store = InMemoryStore()
    assert (await scene.run()).exit_code == ExitCode.OK
    scene.store = first
    assert (await scene.run()).exit_code == ExitCode.OK
    assert scene.truth().duplicates == ()
    assert all(item.phase == Phase.SUCCEEDED for item in scene.items())


async def test_a_pending_item_whose_copy_exists_is_adopted_not_copied() -> None:
    """The checkpoint says pending (checked earlier), the target holds the item's copy."""
    scene = scene_of(3)
    assert (await scene.run()).exit_code == ExitCode.OK
    copies = scene.truth().copies_total
    scene.store = InMemoryStore(
        {
            key: replace(Item(row=item.row), copy_name=item.copy_name, size_bytes=item.size_bytes)
            for key, item in scene.store.items.items()
        }
    )
    assert (await scene.run()).exit_code == ExitCode.OK
    assert scene.truth().copies_total == copies
    assert scene.last_ctx.counters.submissions == 0
    assert all(item.detail.startswith("adopted") for item in scene.items())


class Recorder:
    """A tenant's cloud that notes its full listings and copy requests, in order."""

    def __init__(self, inner: TenantCloud, calls: list[tuple[str, ...]], tenant: str) -> None:
        self.inner = inner
        self.calls = calls
        self.tenant = tenant

    async def list_images(self, region: str, **kwargs: Any) -> Any:
        if kwargs.get("name") is None and kwargs.get("image_id") is None and region != SOURCE:
            self.calls.append(("list", self.tenant, region))
        return await self.inner.list_images(region, **kwargs)

    async def copy_image(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append(("copy",))
        return await self.inner.copy_image(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_resume_lists_each_target_once_not_once_per_item() -> None:
    """40 checked pending items over 2 tenants and 2 targets: 4 listings before any copy."""
    scene = scene_of(10, tenants=("a", "b"), targets=(TARGET, OTHER_TARGET))
    await stopped_early(scene)
    calls: list[tuple[str, ...]] = []
    ctx = scene.context()
    recorded = {tenant: Recorder(cloud, calls, tenant) for tenant, cloud in ctx.clouds.items()}
    ctx = replace(ctx, clouds=recorded)  # a new context: its target index reads them too
    async with anyio.create_task_group() as group:
        group.start_soon(scene.clock.autojump)
        items = merge_list(scene.store.items, scene.rows)
        await store_merged(scene.store, items)
        result = await Engine(ctx, RunOptions()).run(items)
        group.cancel_scope.cancel()
    assert result.exit_code == ExitCode.OK
    first_copy = calls.index(("copy",))
    before = calls[:first_copy]
    assert sorted(before) == sorted(
        ("list", t, r) for t in ("a", "b") for r in (TARGET, OTHER_TARGET)
    )
    listings = sum(call[0] == "list" for call in calls)
    assert listings < sum(call[0] == "copy" for call in calls)


async def test_a_copy_made_elsewhere_during_the_run_is_found_by_a_fresh_listing() -> None:
    """Another run copies two items after this run's first listing: they are submitted here
    more than ``settle`` later, so the listing is taken again and they are adopted."""
    scene = scene_of(7)
    # 3 slots of the account's 5 for this run: the other run has room for its copies.
    config = replace(CONFIG, max_concurrent_copies=3, timing=replace(CONFIG.timing, settle=60.0))
    other = scene.clouds()["acme"]
    late = sorted(scene.rows, key=lambda row: row.line)[:2]  # the smallest: submitted last

    async def elsewhere() -> None:
        await scene.clock.sleep(10.0)
        for row in late:
            item = Item(row=row)
            request = CopyRequest(
                name=f"img-{row.line - 2}",
                description=describe_copy(row, item.token),
                region=row.target_region,
                project_name=row.target_project,
                agency_name="ims_admin_agency",
            )
            await other.copy_image(SOURCE, row.image_id, request, project=row.source_project)

    async with anyio.create_task_group() as group:
        group.start_soon(elsewhere)
        result = await scene.run(config=config)
    assert result.exit_code == ExitCode.OK
    assert scene.truth().duplicates == ()
    assert all(scene.store.items[row.key].detail == "adopted" for row in late)


class Listed:
    """A tenant's cloud whose target region lists ``images`` (made anew at each listing)."""

    def __init__(self, images: Callable[[], list[Image]]) -> None:
        self.images = images
        self.made: list[weakref.ref[Image]] = []

    async def list_images(self, region: str, **kwargs: Any) -> list[Image]:
        images = self.images()
        self.made.extend(weakref.ref(image) for image in images)
        return images


async def test_the_index_keeps_each_tokens_live_copy_and_lets_the_images_go() -> None:
    """What the run keeps of a listing is each token's live copy (active first; killed never):
    the images themselves, with their facts, are let go once read (1,000 tenants' listings
    hold every copy made so far)."""
    rows = sorted(scene_of(3).rows, key=lambda row: row.line)
    first, second, third = (Item(row=row) for row in rows)

    def images() -> list[Image]:
        return [
            Image(id="making", name="a", status="queuing", description=f"x [{first.token}]"),
            Image(id="done", name="a", status="active", description=f"[{first.token}]"),
            Image(id="later", name="a", status="active", description=f"[{first.token}]"),
            Image(id="broken", name="b", status="killed", description=f"[{second.token}]"),
            Image(id="made", name="c", status="saving", description=f"[{third.token}]"),
            Image(id="other", name="d", status="active", description="no token"),
        ]

    cloud = Listed(images)
    clouds: dict[str, Any] = {"acme": cloud}  # only listings are asked of it
    index = TargetIndex(clouds, lambda: 0.0, settle=60.0)
    assert await index.find(first) == Found("done", "active")
    assert await index.find(second) is None
    assert index.found_in_first(third) == Found("made", "saving")
    assert index.listings_taken == 1
    gc.collect()
    assert cloud.made
    assert [ref() for ref in cloud.made if ref() is not None] == []
