"""How a run ended: the exit code and its reason, computed from values alone."""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path

from orchestrator.cli.common import EPILOG
from orchestrator.cli.run import attention_lines
from orchestrator.commands.run import RunSummary
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Item, Phase, Row
from orchestrator.core.outcome import (
    Stop,
    exit_code_for,
    is_done,
    outcome_of,
    to_look_at,
)
from tests.engine_harness import CONFIG, TARGET, Scene


def item(image_id: str, phase: Phase, *, listed: bool = True) -> Item:
    row = Row(
        line=2, tenant="t0", image_id=image_id, source_region="cn-north-4", target_region="x-1"
    )
    return Item(row=row, phase=phase, listed=listed)


def outcome(
    items: list[Item],
    *,
    blocked: Collection[str] = (),
    quota_full: Collection[tuple[str, str]] = (),
    stop: Stop | None = None,
    unavailable: Mapping[str, str] | None = None,
) -> tuple[ExitCode, str]:
    return exit_code_for(
        items,
        blocked=blocked,
        quota_full=quota_full,
        stop=stop,
        unavailable=unavailable or {},
    )


def test_every_item_succeeded_is_ok() -> None:
    """Only succeeded items: exit 0."""
    assert outcome([item("a", Phase.SUCCEEDED)]) == (ExitCode.OK, "every item succeeded")


def test_failed_and_rejected_items_need_attention() -> None:
    """Failed and rejected listed items are counted in the reason of exit 1."""
    items = [item("a", Phase.FAILED), item("b", Phase.REJECTED), item("c", Phase.FAILED)]
    assert outcome(items) == (ExitCode.ATTENTION, "2 failed; 1 rejected")


def test_unlisted_failures_do_not_count() -> None:
    """A failed item no longer in the list does not make the run exit 1."""
    assert outcome([item("a", Phase.FAILED, listed=False)])[0] == ExitCode.OK


def test_blocked_tenants_and_full_quotas_are_named() -> None:
    """Blocked tenants (sorted) and full quotas (in the order found) are the reason of exit 1."""
    code, reason = outcome(
        [item("a", Phase.PENDING)], blocked={"t2": {}, "t1": {}}, quota_full=[("t0", "x-1")]
    )
    assert (code, reason) == (
        ExitCode.ATTENTION,
        "blocked tenant(s): t1, t2; target quota full: t0/x-1 (1 not started)",
    )


def test_failure_threshold_needs_attention() -> None:
    """A stop for the failure threshold is exit 1, even with work left."""
    code, reason = outcome([item("a", Phase.PENDING)], stop=Stop.failure_threshold(3))
    assert (code, reason) == (
        ExitCode.ATTENTION,
        "failure threshold reached (3 failed); work left: 1 item(s) not done",
    )


def test_work_left_after_a_stop_is_later() -> None:
    """Stopped early with work left: exit 75, the stop named."""
    code, reason = outcome([item("a", Phase.RUNNING)], stop=Stop.deadline())
    assert (code, reason) == (
        ExitCode.LATER,
        "work left: 1 item(s) not done (run deadline reached)",
    )


def test_work_left_after_an_outage_names_it() -> None:
    """Work left because a tenant was unreachable: exit 75 with the outage's words."""
    code, reason = outcome([item("a", Phase.PENDING)], unavailable={"t0": "timed out"})
    assert (code, reason) == (
        ExitCode.LATER,
        "tenant(s) unavailable: t0: timed out; work left: 1 item(s) not done",
    )


def test_rejections_do_not_hide_work_left_after_a_stop() -> None:
    """Rejected rows and a stop with work left: exit 1, and the reason names both."""
    items = [item("a", Phase.REJECTED), item("b", Phase.PENDING), item("c", Phase.RUNNING)]
    code, reason = outcome(items, stop=Stop.signal("SIGTERM"))
    assert code == ExitCode.ATTENTION
    assert reason == "1 rejected; work left: 2 item(s) not done (signal SIGTERM)"


def test_a_blocked_tenant_counts_its_items_not_started() -> None:
    """A blocked tenant is named with the items it holds back, not as work left."""
    code, reason = outcome([item("a", Phase.PENDING)], blocked={"t0"})
    assert (code, reason) == (ExitCode.ATTENTION, "blocked tenant(s): t0 (1 not started)")


def test_advice_names_only_what_applies() -> None:
    """No failure: the advice does not offer --retry-failed; a failure: it does."""
    rejected = outcome_of(
        [item("a", Phase.REJECTED)], blocked=(), quota_full=(), stop=None, unavailable={}
    )
    assert "--retry-failed" not in rejected.advice
    assert "fix the rejected rows" in rejected.advice
    failed = outcome_of(
        [item("a", Phase.FAILED)], blocked=(), quota_full=(), stop=None, unavailable={}
    )
    assert "--retry-failed" in failed.advice


def test_a_tenant_blocked_for_this_run_only_is_not_told_to_change_its_key() -> None:
    """A permission refusal (or a skewed clock, an expired token) blocks a tenant for this run
    only: the advice says to fix what the refusal names and that the next run asks again,
    never that the key is not used again (that is for a key refused as such)."""
    items = [item("a", Phase.PENDING)]
    for_run = outcome_of(
        items,
        blocked={"t0"},
        blocked_for_run={"t0"},
        quota_full=(),
        stop=None,
        unavailable={},
    )
    assert "fix the credentials" not in for_run.advice
    assert "not used again" not in for_run.advice
    assert "grant the permission" in for_run.advice
    assert "the next run asks again" in for_run.advice
    lasting = outcome_of(items, blocked={"t0"}, quota_full=(), stop=None, unavailable={})
    assert "fix the credentials of tenant(s) t0" in lasting.advice
    assert "not used again until it changes" in lasting.advice


def test_every_exit_code_is_in_the_help() -> None:
    """The CLI's help names each exit code."""
    for code in ExitCode:
        assert f"{code.value} " in EPILOG


async def test_a_full_target_quota_is_named_by_the_run() -> None:
    """IMG.0015 holds the items back; the run names the (tenant, region) and the cloud's words."""
    scene = Scene()
    scene.account("t1")
    for gib in (1, 2):
        scene.row("t1", gib)
    scene.world.set_quota("t1", TARGET, 0)
    result = await scene.run()
    assert result.exit_code == ExitCode.ATTENTION
    assert result.reason == f"target quota full: t1/{TARGET} (2 not started)"
    assert list(scene.last_ctx.quota_blocked) == [("t1", TARGET)]
    assert {item.phase for item in scene.items()} == {Phase.PENDING}


def test_the_terminal_names_a_full_quota_and_what_to_do(tmp_path: Path) -> None:
    """A full quota of the run is one line: where, the cloud's words, then what to do."""
    summary = RunSummary(
        ExitCode.ATTENTION, "", tmp_path, quota_full={("t1", "x-1"): "IMG.0015: quota exceeded"}
    )
    [line] = attention_lines(summary, CONFIG)
    assert line.startswith("tenant t1, x-1: target quota full: IMG.0015: quota exceeded; ")
    assert "raise the private-image quota of tenant t1 in x-1" in line


def test_the_outcome_counts_as_is_done_and_to_look_at_say() -> None:
    """The outcome's one pass over the items counts what :func:`is_done` and
    :func:`to_look_at` say, item by item (random items: every phase, listed or not, a copy
    to look at or not, blocked tenants, full quotas)."""
    rng = random.Random(5)
    for _ in range(300):
        items = []
        for n in range(rng.randint(0, 30)):
            row = Row(n + 2, rng.choice("abc"), f"img-{n}", "cn-north-4", rng.choice(["x", "y"]))
            items.append(
                replace(
                    Item(row=row),
                    phase=rng.choice(list(Phase)),
                    listed=rng.random() < 0.8,
                    verify=rng.choice(["", "ok", "mismatch"]),
                    undone=rng.choice(["", "tags: refused"]),
                )
            )
        blocked = set(rng.sample("abc", rng.randint(0, 2)))
        full = set(rng.sample([(t, r) for t in "abc" for r in "xy"], rng.randint(0, 3)))
        found = outcome_of(items, blocked=blocked, quota_full=full, stop=None, unavailable={})
        listed = [i for i in items if i.listed]
        failed = sum(i.phase == Phase.FAILED for i in listed)
        rejected = sum(i.phase == Phase.REJECTED for i in listed)
        look = len(to_look_at(items))
        not_done = [i for i in items if not is_done(i)]
        held = [i for i in not_done if i.row.tenant in blocked]
        waiting = [
            i
            for i in not_done
            if i.row.tenant not in blocked
            and (i.row.tenant, i.row.target_region) in full
            and i.phase == Phase.PENDING
        ]
        left = len(not_done) - len(held) - len(waiting)
        assert (f"{failed} failed" in found.reason) == bool(failed)
        assert (f"{rejected} rejected" in found.reason) == bool(rejected)
        assert (f"{look} copied but to look at" in found.reason) == bool(look)
        assert (f"work left: {left} item(s)" in found.reason) == bool(left)
        for tenant in blocked:
            n = sum(i.row.tenant == tenant for i in held)
            assert (f"{tenant} ({n} not started)" in found.reason) == bool(n)
        for t, r in full:
            n = sum((i.row.tenant, i.row.target_region) == (t, r) for i in waiting)
            assert (f"{t}/{r} ({n} not started)" in found.reason) == bool(n)
