"""After the copy (engine/aftercopy.py): verify, carry tags and RAM limits, crash-safe steps."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest

from orchestrator.core.cloud import CloudError, ErrorKind
from orchestrator.core.model import Item, Phase
from orchestrator.engine import afterqueue
from orchestrator.engine.scheduler import RunOptions
from orchestrator.output.report import render_csv, render_markdown, summarize
from orchestrator.output.report_html import render_html
from orchestrator.simulator.faults import FaultPlan
from orchestrator.simulator.imageops import GET, UPDATE, tags_of
from orchestrator.simulator.inmemory import InMemoryTenantCloud
from orchestrator.state.meta import RunMeta
from orchestrator.state.store import InMemoryStore
from tests.engine_harness import CONFIG, TARGET, Scene

pytestmark = pytest.mark.timeout(30)


def only(scene: Scene) -> Item:
    [item] = scene.items()
    return item


def copy_of(scene: Scene, item: Item) -> dict[str, object]:
    assert item.target_image_id is not None
    image = scene.world.image(TARGET, item.target_image_id, scene.clock.now())
    assert image is not None
    return image


def one_row(scene: Scene, **attrs: Any) -> None:
    scene.account("t0")
    scene.row("t0", 1, **attrs)


async def test_tags_and_ram_limits_are_carried_with_the_lists_tags_winning() -> None:
    """Source tags merged with the list's tags column (the list wins), min_ram/max_ram
    patched; the report fields say what was carried; exit 0."""
    scene = Scene()
    one_row(scene, tags=["env.prod", "team.a"], min_ram=1024, max_ram=4096)
    scene.rows[0] = replace(scene.rows[0], tags="team=b; cost=42")
    result = await scene.run()
    item = only(scene)
    assert (result.exit_code, item.phase, item.verify) == (0, Phase.SUCCEEDED, "ok")
    assert item.carried == "tags:3,min_ram,max_ram"
    copy = copy_of(scene, item)
    assert tags_of(copy) == {"env": "prod", "team": "b", "cost": "42"}
    assert (copy["min_ram"], copy["max_ram"]) == (1024, 4096)


async def test_an_untagged_source_is_not_asked_for_its_tags_again() -> None:
    """Preflight's listing showed ``tags: []``: the source's tags are not read from the tags
    API (one request less per item); the list's tags column is still carried."""
    scene = Scene()
    one_row(scene)
    scene.rows[0] = replace(scene.rows[0], tags="team=b")
    result = await scene.run()
    item = only(scene)
    assert (result.exit_code, item.phase, item.carried) == (0, Phase.SUCCEEDED, "tags:1")
    assert tags_of(copy_of(scene, item)) == {"team": "b"}
    assert scene.truth().requests.get("tags", 0) == 0


@pytest.mark.parametrize("listing", ["no tags field", "tagged"])
async def test_tags_are_read_unless_the_listing_showed_none(listing: str) -> None:
    """A listing without the ``tags`` field says nothing, and a tagged one is read from the
    tags API (``key.value`` is ambiguous): the tags call is made and its tags carried."""
    scene = Scene()
    one_row(scene, tags=["env.prod"] if listing == "tagged" else [])
    if listing == "no tags field":
        source = scene.world.images[scene.rows[0].source_region]
        del source[scene.rows[0].image_id]["tags"]
    result = await scene.run()
    item = only(scene)
    assert (result.exit_code, item.phase) == (0, Phase.SUCCEEDED)
    assert scene.truth().requests.get("tags", 0) == 1
    assert item.carried == ("tags:1" if listing == "tagged" else "")


class UnreadCopy:
    """A tenant's cloud that refuses to read the copy (a listing by id in the target)."""

    def __init__(self, inner: InMemoryTenantCloud) -> None:
        self.inner = inner

    async def list_images(self, region: str, **kwargs: Any) -> Any:
        if region == TARGET and kwargs.get("image_id"):
            raise CloudError(ErrorKind.PERMANENT, "refused")
        return await self.inner.list_images(region, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class UnreadCopyScene(Scene):
    def clouds(self) -> dict[str, Any]:
        return {name: UnreadCopy(cloud) for name, cloud in super().clouds().items()}


@pytest.mark.parametrize(
    ("carry", "carried"),
    [
        ("nothing", ""),
        ("the list's tags", "tags:1"),
        ("the source's tags", "tags:1"),
        ("min_ram", "min_ram"),
        ("a copy not read", ""),
    ],
)
async def test_carrying_is_saved_only_when_it_has_something_to_do(carry: str, carried: str) -> None:
    """Nothing to carry (no tag from the list or the source, the copy's RAM limits the
    source's): verifying's verdict is saved with ``succeeded``, no ``carrying`` save. Anything
    to carry, or a copy verifying could not read: ``carrying`` is saved, then done."""
    scene = UnreadCopyScene() if carry == "a copy not read" else Scene()
    one_row(
        scene,
        tags=["env.prod"] if carry == "the source's tags" else [],
        min_ram=1024 if carry == "min_ram" else 0,
    )
    if carry == "the list's tags":
        scene.rows[0] = replace(scene.rows[0], tags="team=b")
    phases: list[Phase] = []
    result = await scene.run(on_change=lambda item: phases.append(item.phase))
    item = only(scene)
    assert (item.phase, item.carried) == (Phase.SUCCEEDED, carried)
    assert phases[-2:] == (
        [Phase.VERIFYING, Phase.SUCCEEDED]
        if carry == "nothing"
        else [Phase.CARRYING, Phase.SUCCEEDED]
    )
    assert (result.exit_code, item.verify) == (
        (1, "skipped") if carry == "a copy not read" else (0, "ok")
    )


async def test_a_copy_unlike_its_source_is_a_mismatch_and_exit_1() -> None:
    """A copy whose checksum and os bits differ: succeeded, verify=mismatch naming both, exit 1,
    copied once."""
    scene = Scene()
    one_row(scene, checksum="aaa")
    scene.world.differ_copies(scene.rows[0].image_id, {"checksum": "bbb", "__os_bit": "32"})
    result = await scene.run()
    item = only(scene)
    assert (result.exit_code, item.phase, item.verify) == (1, Phase.SUCCEEDED, "mismatch")
    assert "checksum: source aaa, copy bbb" in item.mismatch
    assert "__os_bit: source 64, copy 32" in item.mismatch
    assert "to look at" in result.reason
    assert set(scene.truth().submissions.values()) == {1}


async def test_verify_ignore_leaves_a_field_uncompared() -> None:
    """[verify] ignore = ["checksum"]: a differing checksum is no mismatch."""
    scene = Scene()
    one_row(scene, checksum="aaa")
    scene.world.differ_copies(scene.rows[0].image_id, {"checksum": "bbb"})
    config = replace(CONFIG, after=replace(CONFIG.after, verify_ignore=("checksum",)))
    result = await scene.run(config)
    assert (result.exit_code, only(scene).verify) == (0, "ok")


async def test_a_refused_update_leaves_the_item_succeeded_with_the_reason() -> None:
    """ims:images:update refused (403): as on the real cloud, it refuses both adding tags and
    the PATCH of the RAM limits. The item succeeds, says neither was carried and why (the
    cloud's message names the action), the tenant is not blocked, exit 1."""
    scene = Scene()
    one_row(scene, tags=["env.prod"], min_ram=2048)
    scene.world.deny("t0", UPDATE)
    result = await scene.run()
    item = only(scene)
    assert (result.exit_code, item.phase, item.carried) == (1, Phase.SUCCEEDED, "")
    assert "tags not carried" in item.undone
    assert "min_ram/max_ram not carried" in item.undone
    assert "Policy doesn't allow ims:images:update to be performed" in item.undone
    assert scene.last_ctx.blocked == {}


async def test_a_refused_step_names_the_permission_of_the_call_refused() -> None:
    """A 403 on adding tags names ims:images:update (docs/ims-api.md §10), one on reading the
    source's members ims:images:get: never the copy's permissions, which were not refused."""
    scene = Scene()
    one_row(scene, tags=["env.prod"])
    scene.world.deny("t0", UPDATE)
    scene.world.deny("t0", GET)
    await scene.run()
    item = only(scene)
    assert "tags not carried: refused" in item.undone
    assert "grant ims:images:update," in item.undone
    assert "sharing not checked: read the source's members: refused" in item.notes
    assert "grant ims:images:get," in item.notes
    for text in (item.undone, item.notes):
        assert "ims:images:copy" not in text
        assert "grant ims:images:list" not in text


async def test_carry_can_be_turned_off() -> None:
    """[carry] tags = false, ram = false: nothing carried, min_ram then compared (mismatch)."""
    scene = Scene()
    one_row(scene, tags=["env.prod"], min_ram=2048)
    config = replace(CONFIG, after=replace(CONFIG.after, carry_tags=False, carry_ram=False))
    result = await scene.run(config)
    item = only(scene)
    assert (item.carried, item.verify) == ("", "mismatch")
    assert "min_ram: source 2048, copy 0" in item.mismatch
    assert result.exit_code == 1


async def test_a_shared_source_is_noted_not_failed() -> None:
    """A source shared with 3 projects: a note on the item, exit 0."""
    scene = Scene()
    one_row(scene)
    scene.world.share(scene.rows[0].image_id, ["p1", "p2", "p3"])
    result = await scene.run()
    assert result.exit_code == 0
    assert only(scene).notes.startswith("source shared with 3 projects; the copy is not shared")


async def test_the_slot_is_free_while_the_steps_after_the_copy_run() -> None:
    """One copy slot, two items: the second copy is submitted while the first item is still
    verifying (its members call is slow), not after it succeeded."""
    scene = Scene(faults=FaultPlan(script={"members": ["503", "503", "503"]}))
    scene.account("t0")
    scene.row("t0", 1)
    scene.row("t0", 1)
    seen: list[tuple[str, Phase]] = []
    config = replace(CONFIG, max_concurrent_copies=1)
    result = await scene.run(config, on_change=lambda item: seen.append((item.key, item.phase)))
    assert result.exit_code == 0
    first = seen[0][0]
    done = seen.index((first, Phase.SUCCEEDED))
    second_submitted = next(
        n for n, (key, phase) in enumerate(seen) if key != first and phase == Phase.SUBMITTING
    )
    assert second_submitted < done


@pytest.mark.parametrize("step", [Phase.VERIFYING, Phase.CARRYING])
async def test_a_run_resumes_at_the_saved_step_without_copying_again(step: Phase) -> None:
    """An item left verifying or carrying (a kill) is finished by the next run: the tags are
    there, the copy was made once."""
    scene = Scene()
    one_row(scene, tags=["env.prod"], min_ram=512)
    await scene.run()
    item = only(scene)
    stored = scene.world.images[TARGET][str(item.target_image_id)]
    stored["tags"], stored["min_ram"] = [], 0  # as the copy was before the steps
    left = replace(item, phase=step, carried="", verify="" if step == Phase.VERIFYING else "ok")
    await scene.store.commit([left])
    result = await scene.run()
    again = only(scene)
    assert (result.exit_code, again.phase, again.carried) == (0, Phase.SUCCEEDED, "tags:1,min_ram")
    assert tags_of(copy_of(scene, again)) == {"env": "prod"}
    assert set(scene.truth().submissions.values()) == {1}


async def test_a_killed_copy_after_success_fails_the_item() -> None:
    """A copy that turns killed after its job said SUCCESS fails the item, naming cleanup."""
    scene = Scene()
    one_row(scene)
    await scene.run()
    item = only(scene)
    scene.world.images[TARGET][str(item.target_image_id)]["status"] = "killed"
    scene.world._copies.pop(str(item.target_image_id), None)
    await scene.store.commit([replace(item, phase=Phase.VERIFYING)])
    result = await scene.run()
    failed = only(scene)
    assert (result.exit_code, failed.phase, failed.error_code) == (
        1,
        Phase.FAILED,
        "TARGET_IMAGE_KILLED",
    )
    assert "cleanup" in (failed.error_message or "")


async def test_the_reports_show_verify_carried_and_the_mismatch() -> None:
    """CSV has verify/mismatch/carried/notes; Markdown and HTML list the mismatch with the
    failures."""
    scene = Scene()
    one_row(scene, tags=["env.prod"], min_ram=1024, checksum="aaa")
    scene.world.differ_copies(scene.rows[0].image_id, {"checksum": "bbb"})
    await scene.run()
    items = scene.items()
    [record] = csv.DictReader(io.StringIO(render_csv(items)))
    assert (record["verify"], record["carried"]) == ("mismatch", "tags:1,min_ram")
    assert record["mismatch"] == "checksum: source aaa, copy bbb"
    markdown = render_markdown(items, summarize(items))
    assert "checksum: source aaa, copy bbb" in markdown.split("## Copied, to look at")[1]
    page = render_html(items, RunMeta(), generated_at=0.0)
    assert "verify mismatch" in page.split('id="failures"')[1]


class SlowMembers:
    """A tenant's cloud whose ``image_members`` (a call of the verify step) takes a minute;
    ``busy`` counts the calls under way across tenants."""

    def __init__(self, inner: InMemoryTenantCloud, scene: Scene, busy: list[int]) -> None:
        self.inner = inner
        self.scene = scene
        self.busy = busy  # [now, most]

    async def image_members(self, *args: Any, **kwargs: Any) -> Any:
        self.busy[0] += 1
        self.busy[1] = max(self.busy)
        try:
            await self.scene.clock.sleep(60.0)
            return await self.inner.image_members(*args, **kwargs)
        finally:
            self.busy[0] -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class SlowScene(Scene):
    busy: list[int]

    def clouds(self) -> dict[str, Any]:
        return {
            name: SlowMembers(cloud, self, self.busy) for name, cloud in super().clouds().items()
        }


async def test_the_steps_after_the_copy_are_a_bounded_number_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 copies that end together while their checks are slow: at most the limit of items
    are verified at once (the others wait in line, not each in its own task), and every one
    is verified and carried in the end."""
    monkeypatch.setattr(afterqueue, "AFTER_COPY_CONCURRENCY", 3)
    scene = SlowScene()
    scene.busy = [0, 0]
    for tenant in range(8):
        scene.account(f"t{tenant}")
        for _ in range(5):
            scene.row(f"t{tenant}", 1)
    result = await scene.run()
    assert result.exit_code == 0
    assert {(item.phase, item.verify) for item in scene.items()} == {(Phase.SUCCEEDED, "ok")}
    assert scene.busy[1] == 3


class RecordingStore(InMemoryStore):
    """An in-memory store that remembers every state committed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[tuple[str, Phase]] = []

    async def commit(self, items: Iterable[Item] = (), meta: RunMeta | None = None) -> None:
        items = list(items)
        self.saved.extend((item.key, item.phase) for item in items)
        await super().commit(items, meta)

    def phases(self, key: str) -> list[Phase]:
        return [phase for saved, phase in self.saved if saved == key]


AFTER_JOB = [Phase.SUBMITTING, Phase.RUNNING]


async def test_verifying_is_logged_not_saved_when_its_checks_go_on_at_once() -> None:
    """The copy is made and checked at once: ``verifying`` is shown and logged (its event, as
    before) but never saved; the checkpoint goes from the job id to ``succeeded``."""
    scene = Scene(store=RecordingStore())
    one_row(scene)
    shown: list[Phase] = []
    result = await scene.run(on_change=lambda item: shown.append(item.phase))
    item = only(scene)
    assert (result.exit_code, item.phase, item.verify) == (0, Phase.SUCCEEDED, "ok")
    assert shown[-3:] == [Phase.RUNNING, Phase.VERIFYING, Phase.SUCCEEDED]
    assert isinstance(scene.store, RecordingStore)
    assert scene.store.phases(item.key)[-3:] == [*AFTER_JOB, Phase.SUCCEEDED]


class NotActiveAtFirst:
    """A tenant's cloud whose copy reads ``saving`` at its first look, active after."""

    def __init__(self, inner: InMemoryTenantCloud) -> None:
        self.inner = inner
        self.looks = 0

    async def list_images(self, region: str, **kwargs: Any) -> Any:
        images = await self.inner.list_images(region, **kwargs)
        if region == TARGET and kwargs.get("image_id"):
            self.looks += 1
            if self.looks == 1:
                return [replace(image, status="saving") for image in images]
        return images

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class NotActiveScene(Scene):
    def clouds(self) -> dict[str, Any]:
        return {name: NotActiveAtFirst(cloud) for name, cloud in super().clouds().items()}


@pytest.mark.parametrize("wait", ["the copy not active yet", "a call retried"])
async def test_verifying_is_saved_before_its_checks_wait(wait: str) -> None:
    """A check that must wait (the copy not yet active, a call to try again later) saves
    ``verifying`` first: a kill while it waits resumes at the check, not at the job's poll."""
    if wait == "a call retried":
        scene = Scene(store=RecordingStore(), faults=FaultPlan(script={"members": ["503"]}))
    else:
        scene = NotActiveScene(store=RecordingStore())
    one_row(scene)
    result = await scene.run()
    item = only(scene)
    assert (result.exit_code, item.phase, item.verify) == (0, Phase.SUCCEEDED, "ok")
    assert isinstance(scene.store, RecordingStore)
    assert scene.store.phases(item.key)[-4:] == [*AFTER_JOB, Phase.VERIFYING, Phase.SUCCEEDED]


async def test_verifying_is_saved_before_it_waits_in_the_line_of_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two copies made together, one check at a time: the first is checked at once (not
    saved ``verifying``), the second waits in line, saved ``verifying`` before it waits."""
    monkeypatch.setattr(afterqueue, "AFTER_COPY_CONCURRENCY", 1)
    scene = SlowScene(store=RecordingStore())
    scene.busy = [0, 0]
    for tenant in ("t0", "t1"):
        scene.account(tenant)
        scene.row(tenant, 1)
    result = await scene.run()
    assert result.exit_code == 0
    store = scene.store
    assert isinstance(store, RecordingStore)
    first, second = sorted(
        (item.key for item in scene.items()),
        key=lambda key: store.saved.index((key, Phase.SUCCEEDED)),
    )
    assert store.phases(first)[-3:] == [*AFTER_JOB, Phase.SUCCEEDED]
    assert store.phases(second)[-4:] == [*AFTER_JOB, Phase.VERIFYING, Phase.SUCCEEDED]
    # Saved before the first item's check ended, not once its own began.
    assert store.saved.index((second, Phase.VERIFYING)) < store.saved.index(
        (first, Phase.SUCCEEDED)
    )


class EndlessMembers:
    """A tenant's cloud whose members call never answers (until the run stops)."""

    def __init__(self, inner: InMemoryTenantCloud, scene: Scene) -> None:
        self.inner = inner
        self.scene = scene

    async def image_members(self, *args: Any, **kwargs: Any) -> Any:
        await self.scene.clock.sleep(1e9)
        return await self.inner.image_members(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class EndlessScene(Scene):
    def clouds(self) -> dict[str, Any]:
        return {name: EndlessMembers(cloud, self) for name, cloud in super().clouds().items()}


async def test_a_stop_during_the_checks_saves_verifying_and_the_next_run_ends_it() -> None:
    """A stop while a copy just made is checked (``verifying`` not saved yet): it is saved as
    the run stops, and the next run checks it without polling its job again."""
    scene = EndlessScene()
    one_row(scene)
    result = await scene.run(options=RunOptions(deadline_at=scene.clock.now() + 3600.0))
    assert result.exit_code == 75
    assert only(scene).phase == Phase.VERIFYING
    polls = scene.truth().requests.get("job", 0)
    again = Scene(clock=scene.clock, world=scene.world, rows=scene.rows, store=scene.store)
    again.tenant_account.update(scene.tenant_account)
    result = await again.run()
    assert (result.exit_code, only(again).phase) == (0, Phase.SUCCEEDED)
    assert again.truth().requests.get("job", 0) == polls
    assert set(again.truth().submissions.values()) == {1}


class RefusedMembers:
    """A tenant's cloud whose credentials are refused at the members call (a 401)."""

    def __init__(self, inner: InMemoryTenantCloud) -> None:
        self.inner = inner

    async def image_members(self, *args: Any, **kwargs: Any) -> Any:
        raise CloudError(ErrorKind.AUTH, "bad signature", code="APIGW.0301", status=401)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RefusedScene(Scene):
    def clouds(self) -> dict[str, Any]:
        return {name: RefusedMembers(cloud) for name, cloud in super().clouds().items()}


async def test_a_check_left_for_the_next_run_is_saved_verifying() -> None:
    """The tenant stopped during the checks (credentials refused): the item stays at its
    step for the next run, ``verifying`` saved, not the job to poll again."""
    scene = RefusedScene()
    one_row(scene)
    await scene.run()
    item = only(scene)
    assert item.phase == Phase.VERIFYING
    assert item.row.tenant in scene.last_ctx.blocked


async def test_keeping_verifying_never_overwrites_a_later_step() -> None:
    """``RunContext.keep`` saves a ``verifying`` only over a state from before the copy was
    made: a task stopped while its next step's save was under way leaves that step stored."""
    scene = Scene()
    one_row(scene)
    await scene.run()
    done = only(scene)
    ctx = scene.context()
    await ctx.keep(replace(done, phase=Phase.VERIFYING))
    assert only(scene) is done
    running = replace(done, phase=Phase.RUNNING)
    await scene.store.commit([running])
    verifying = replace(done, phase=Phase.VERIFYING)
    await ctx.keep(verifying)
    assert only(scene) is verifying
