"""The engine on virtual time against the in-memory fake cloud: cap, order, fairness, faults."""

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import anyio.abc
import pytest

from orchestrator.config import Config
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Item, Phase
from orchestrator.core.outcome import Stop
from orchestrator.engine.context import RunContext
from orchestrator.engine.scheduler import Engine, RunOptions
from orchestrator.engine.window import Window
from orchestrator.simulator.faults import FaultPlan
from orchestrator.state.checkpoint import LockLost
from orchestrator.state.store import InMemoryStore
from tests.engine_harness import CONFIG, SOURCE, TIMING, Scene


async def test_happy_path_copies_everything_within_the_cap() -> None:
    """Twelve images of one tenant all succeed, never more than 5 copies in flight."""
    scene = Scene()
    scene.account("t1")
    for n in range(12):
        scene.row("t1", 5 + n)
    result = await scene.run()
    truth = scene.truth()
    assert result.exit_code == ExitCode.OK
    assert set(scene.states().values()) == {"succeeded"}
    assert truth.max_in_flight["t1"] == 5
    assert truth.duplicates == ()
    assert all(item.target_image_id for item in scene.items())


async def test_largest_images_go_first() -> None:
    """Within a tenant, the largest image is submitted first (LPT)."""
    scene = Scene()
    scene.account("t1")
    sizes = [3, 90, 12, 40, 1, 60, 7]
    for gib in sizes:
        scene.row("t1", gib)
    await scene.run()
    copies = sorted(scene.truth().copies, key=lambda c: c.begin)
    by_id = {row.image_id: gib for row, gib in zip(scene.rows, sizes, strict=True)}
    first_five = {by_id[c.image_id] for c in copies[:5]}
    assert first_five == set(sorted(sizes, reverse=True)[:5])


async def test_priority_overrides_size() -> None:
    """A higher priority column goes before a larger image."""
    scene = Scene()
    scene.account("t1")
    rows = [scene.row("t1", gib) for gib in (100, 90, 80, 70, 60, 1)]
    scene.rows[-1] = replace(rows[-1], priority=5)
    await scene.run(config=replace(CONFIG, max_concurrent_copies=1))
    first = min(scene.truth().copies, key=lambda c: c.begin)
    assert first.image_id == rows[-1].image_id


async def test_two_tenants_of_one_account_share_one_window() -> None:
    """Config tenants that resolve to the same domain never exceed 5 together."""
    scene = Scene()
    scene.account("acct")
    scene.tenant("ops", "acct")
    scene.tenant("dev", "acct")
    for n in range(8):
        scene.row("ops", 10 + n)
        scene.row("dev", 10 + n)
    from orchestrator.config import TenantConfig

    config = replace(CONFIG, tenants={"ops": TenantConfig("ops"), "dev": TenantConfig("dev")})
    result = await scene.run(config=config)
    assert result.exit_code == ExitCode.OK
    assert scene.truth().max_in_flight["acct"] == 5


async def test_tenants_are_served_side_by_side() -> None:
    """A big tenant does not starve a small one: both start copying at once."""
    scene = Scene()
    scene.account("big")
    scene.account("small")
    for n in range(30):
        scene.row("big", 100 + n)
    scene.row("small", 5)
    await scene.run()
    copies = scene.truth().copies
    start = min(c.begin for c in copies)
    small = next(c for c in copies if c.account == "small")
    assert small.begin - start < 60


async def test_slots_held_by_others_cause_back_pressure_not_failures() -> None:
    """Copies started outside the tool: IMG.0060 shrinks the window, no item fails."""
    scene = Scene()
    scene.account("t1")
    for n in range(10):
        scene.row("t1", 10 + n)
    scene.world.occupy("t1", 3, 2000.0, scene.clock.now())
    result = await scene.run()
    truth = scene.truth()
    assert result.exit_code == ExitCode.OK
    assert truth.max_in_flight["t1"] <= 5
    assert scene.last_ctx.counters.back_pressure >= 1
    assert truth.duplicates == ()


async def test_lost_replies_are_adopted_not_resent() -> None:
    """A POST carried out whose reply is lost is found by its token, never submitted twice."""
    scene = Scene()
    scene.account("t1")
    for n in range(15):
        scene.row("t1", 5 + n)
    scene.faults = FaultPlan(seed=3, rates={"copy": {"lost_reply": 0.3}})
    result = await scene.run()
    truth = scene.truth()
    assert truth.lost_replies >= 3
    assert truth.duplicates == ()
    assert result.exit_code == ExitCode.OK
    assert any(item.detail == "adopted" for item in scene.items())


async def test_without_settle_window_lost_replies_duplicate() -> None:
    """The lost-reply test sees the bug: with settle=0 and copies that show only at the end,
    the tool resubmits copies that exist."""
    scene = Scene()
    scene.world.params = replace(scene.world.params, visibility="at_end")
    scene.account("t1")
    for n in range(15):
        scene.row("t1", 5 + n)
    scene.faults = FaultPlan(seed=3, rates={"copy": {"lost_reply": 0.3}})
    await scene.run(config=replace(CONFIG, timing=replace(TIMING, settle=0.0)))
    assert scene.truth().duplicates != ()


async def test_at_end_visibility_with_settle_has_no_duplicates() -> None:
    """When copies show in the target only at the end, a long settle still avoids duplicates."""
    scene = Scene()
    scene.world.params = replace(scene.world.params, visibility="at_end")
    scene.account("t1")
    for n in range(15):
        scene.row("t1", 5 + n)
    scene.faults = FaultPlan(seed=3, rates={"copy": {"lost_reply": 0.3}})
    config = replace(CONFIG, timing=replace(TIMING, settle=4 * 3600.0))
    result = await scene.run(config=config)
    assert scene.truth().duplicates == ()
    assert result.exit_code == ExitCode.OK


async def test_unknown_items_keep_their_slot() -> None:
    """While an item reconciles, its slot stays held: the cloud never sees more than 5."""
    scene = Scene()
    scene.world.params = replace(scene.world.params, visibility="at_end")
    scene.account("t1")
    for n in range(12):
        scene.row("t1", 5 + n)
    scene.faults = FaultPlan(seed=5, rates={"copy": {"lost_reply": 0.5}})
    await scene.run(config=replace(CONFIG, timing=replace(TIMING, settle=4 * 3600.0)))
    truth = scene.truth()
    assert truth.max_in_flight["t1"] <= 5
    assert scene.last_ctx.counters.back_pressure == 0  # the tool never asked for a 6th


async def test_failed_job_keeps_code_and_reason() -> None:
    """A FAIL job ends the item failed with the cloud's error code and reason; exit 1."""
    scene = Scene()
    scene.world.params = replace(scene.world.params, fail_rate=1.0)
    scene.account("t1")
    scene.row("t1", 5)
    result = await scene.run()
    (item,) = scene.items()
    assert result.exit_code == ExitCode.ATTENTION
    assert item.phase == Phase.FAILED
    assert item.error_code == "IMG.0500"
    assert item.error_message


async def test_rejected_rows_are_never_submitted() -> None:
    """Encrypted, ISO and oversized images are rejected in preflight; nothing is copied."""
    scene = Scene()
    scene.account("t1")
    scene.row("t1", 5, __system__cmkid="kms-key")
    scene.row("t1", 5, disk_format="iso")
    limit = CONFIG.size_limit_gib(SOURCE)  # the limit is the source region's: 300 GiB here
    scene.row("t1", limit + 1)
    result = await scene.run()
    assert scene.truth().copies_total == 0
    assert result.exit_code == ExitCode.ATTENTION
    assert [(i.phase, i.error_code) for i in scene.items()] == [
        (Phase.REJECTED, "encrypted"),
        (Phase.REJECTED, "iso"),
        (Phase.REJECTED, "too_large"),
    ]


async def test_run_deadline_stops_submitting_and_exits_75() -> None:
    """--deadline: no POST after it; the run ends with work left and exit 75."""
    scene = Scene()
    scene.account("t1")
    for n in range(20):
        scene.row("t1", 50 + n)
    deadline_at = scene.clock.now() + 1000.0
    result = await scene.run(options=RunOptions(deadline_at=deadline_at))
    assert result.exit_code == ExitCode.LATER
    assert all(c.begin <= deadline_at for c in scene.truth().copies)
    assert "pending" in set(scene.states().values())


async def test_resume_adopts_running_jobs_without_duplicates() -> None:
    """A second run after a deadline adopts the copies in flight and finishes the list."""
    scene = Scene()
    scene.account("t1")
    for n in range(20):
        scene.row("t1", 50 + n)
    await scene.run(options=RunOptions(deadline_at=scene.clock.now() + 1000.0))
    result = await scene.run()
    truth = scene.truth()
    assert result.exit_code == ExitCode.OK
    assert truth.duplicates == ()
    assert truth.copies_total == 20


async def test_finished_list_makes_no_call() -> None:
    """Running a finished list again sends no request and exits as before."""
    scene = Scene()
    scene.account("t1")
    scene.row("t1", 5)
    await scene.run()
    scene.store._meta = replace(scene.store.meta, last_exit=ExitCode.OK)
    before = sum(scene.truth().requests.values())
    result = await scene.run()
    assert result.skipped
    assert result.exit_code == ExitCode.OK
    assert sum(scene.truth().requests.values()) == before


async def test_bad_credentials_block_the_tenant_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant whose key is refused stops at once; the other tenant finishes."""
    scene = Scene()
    scene.account("good")
    scene.account("bad")
    scene.row("good", 5)
    scene.row("bad", 5)
    ctx_clouds = scene.clouds()
    from orchestrator.simulator.inmemory import InMemoryTenantCloud

    ctx_clouds["bad"] = InMemoryTenantCloud(scene.world, "bad", scene.clock.now, secret_key="x")
    monkeypatch.setattr(scene, "clouds", lambda: ctx_clouds)
    result = await scene.run()
    truth = scene.truth()
    assert result.exit_code == ExitCode.ATTENTION
    assert "bad" in scene.last_ctx.blocked
    assert truth.auth_failures.get("AKbad", 0) == 1
    assert {i.row.tenant: i.phase for i in scene.items()}["good"] == Phase.SUCCEEDED


async def test_a_copy_refused_for_a_permission_says_the_permission_is_missing() -> None:
    """A 403 APIGW.0302 on the copy POST is a missing permission, not refused credentials:
    the item waits with a line naming ims:images:copy; the tenant is still blocked for this
    run only (nothing remembered), the other tenant finishes."""
    scene = Scene()
    scene.account("good")
    scene.account("denied")
    scene.row("good", 5)
    scene.row("denied", 5)
    scene.world.account("denied").denied.add("copy")
    result = await scene.run()
    assert result.exit_code == ExitCode.ATTENTION
    assert "denied" in scene.last_ctx.blocked
    assert scene.last_ctx.lasting_blocks() == {}
    items = {i.row.tenant: i for i in scene.items()}
    assert items["good"].phase == Phase.SUCCEEDED
    refused = items["denied"]
    assert refused.phase == Phase.PENDING
    assert refused.detail.startswith("copy refused: HTTP 403 APIGW.0302: "), refused.detail
    assert "grant ims:images:copy," in refused.detail
    assert "credentials" not in refused.detail
    assert scene.truth().requests.get("copy") == 2  # one each: the refused one is not repeated


async def test_failure_threshold_stops_submitting_but_follows_running_copies() -> None:
    """--max-failures: no new copy once reached; copies already running end; exit 1."""
    scene = Scene()
    scene.world.params = replace(scene.world.params, fail_rate=1.0)
    scene.account("t1")
    for n in range(20):
        scene.row("t1", 5 + n)
    result = await scene.run(max_failures=2)
    truth = scene.truth()
    assert result.exit_code == ExitCode.ATTENTION
    assert truth.copies_total < 20
    assert truth.in_flight_now["t1"] == 0
    submitted = {c.image_id for c in truth.copies}
    assert all(i.phase.is_terminal for i in scene.items() if i.row.image_id in submitted)
    assert "pending" in set(scene.states().values())


async def test_a_halt_wakes_a_window_waiting_for_its_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Submitting stops while the window waits for its only slot (held by a copy of about an
    hour): the window's server ends then, not when that copy frees the slot."""
    scene = Scene()
    scene.account("t1")
    scene.row("t1", 150)
    scene.row("t1", 150)
    ended: list[float] = []
    serve = Engine._serve

    async def watched(engine: Engine, window: Window, work: anyio.abc.TaskGroup) -> None:
        await serve(engine, window, work)
        ended.append(scene.clock.now())

    monkeypatch.setattr(Engine, "_serve", watched)
    made: list[RunContext] = []
    context = scene.context

    def keep(config: Config = CONFIG, **extra: Any) -> RunContext:
        made.append(context(config, **extra))
        return made[-1]

    def halt_once_running(item: Item) -> None:
        if item.phase == Phase.RUNNING:
            made[0].stop_submitting(Stop.deadline())

    scene.context = keep  # type: ignore[method-assign]
    start = scene.clock.now()
    config = replace(CONFIG, max_concurrent_copies=1)
    result = await scene.run(config, on_change=halt_once_running)
    assert result.exit_code == ExitCode.LATER
    assert scene.truth().copies_total == 1
    assert ended[0] - start < 60  # the copy it waited for took most of an hour
    assert scene.clock.now() - start > 2000


class LostLockStore(InMemoryStore):
    """The state dir's lock lost (another run may own it) once the items are checked: a copy
    intent's write raises LockLost, as the file store's check before every write does."""

    async def commit_intents(self, items: Sequence[Item]) -> bool:
        raise LockLost("lock was removed while this run held it")


async def test_a_lock_lost_before_an_intent_is_written_sends_no_copy_request() -> None:
    """The engine checks no lock itself: the store's check before the intent's write stops the
    run (LockLost, exit 75), and no copy request is sent without a written intent."""
    scene = Scene(store=LostLockStore())
    scene.account("t1")
    scene.row("t1", 1.0)
    scene.row("t1", 2.0)
    with pytest.raises(ExceptionGroup) as caught:
        await scene.run()
    assert caught.value.split(LockLost)[0] is not None
    assert scene.truth().copies_total == 0
