"""The live view and the plain progress line: counts, slots per tenant, ETA, recent failures."""

from __future__ import annotations

import io
from dataclasses import replace

from rich.console import Console

from orchestrator.core.model import Item, Phase, Row
from orchestrator.engine.context import Counters
from orchestrator.output.progress import ProgressModel
from tests.virtual_clock import VirtualClock


def items(tenant: str, count: int) -> list[Item]:
    return [Item(Row(n, tenant, f"{tenant}-{n}", "cn-north-4", "cn-east-3")) for n in range(count)]


def screen(model: ProgressModel) -> str:
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(model)
    return console.export_text()


def test_eta_follows_the_rate_copies_end_and_ignores_instant_rejections() -> None:
    """No ETA before a copy ended; rejections (instant) do not make the ETA look short."""
    clock = VirtualClock(start=0.0)
    alpha = items("alpha", 10)
    model = ProgressModel(alpha, 5, clock=clock.now)
    model.update(replace(alpha[9], phase=Phase.REJECTED))
    clock.advance(10.0)
    assert model.eta() == "—"
    for item in alpha[:2]:
        model.update(replace(item, phase=Phase.SUCCEEDED))
    clock.advance(50.0)
    assert model.eta() == "3m30s"  # 2 copies a minute, 7 left
    assert model.line().startswith("progress 3/10 done: 2 succeeded, 0 failed, 1 rejected")


def test_screen_shows_slots_per_tenant_and_recent_failures() -> None:
    """One line per tenant with work left (slots in use of the cap), then the recent failures."""
    alpha, beta, gamma = items("alpha", 4), items("beta", 2), items("gamma", 1)
    model = ProgressModel(alpha + beta + gamma, 5, title="m.csv", counters=Counters(polls=7))
    for item in alpha[:3]:
        model.update(replace(item, phase=Phase.RUNNING, job_id="j"))
    model.update(replace(beta[0], phase=Phase.FAILED, error_code="IMG.0500", error_message="oops"))
    model.update(replace(gamma[0], phase=Phase.SUCCEEDED))
    text = screen(model)
    assert "ims-migrate run m.csv" in text
    assert "alpha   ■■■□□ 3/5" in text
    assert "beta    □□□□□ 0/5" in text
    assert "gamma" not in text  # nothing left to do there
    assert "job polls 7" in text
    assert "recent failures" in text
    assert "beta beta-0 -> cn-east-3: IMG.0500 oops" in text


def test_eta_leaves_out_the_items_of_blocked_tenants_and_says_so() -> None:
    """A tenant blocked during the run (its credentials refused) copies nothing more in it:
    its items leave the ETA, which says how many it does not count."""
    clock = VirtualClock(start=0.0)
    alpha, gamma = items("alpha", 4), items("gamma", 6)
    blocked: dict[str, str] = {}  # the run's own, filled as tenants are refused
    model = ProgressModel(alpha + gamma, 5, clock=clock.now, blocked=blocked)
    for item in alpha[:2]:
        model.update(replace(item, phase=Phase.SUCCEEDED))
    clock.advance(60.0)
    assert model.eta() == "4m00s"  # 30 s a copy, 8 left
    blocked["gamma"] = "APIGW.0301"
    assert model.eta() == "1m00s (6 items of blocked tenants not counted)"
    assert model.line().endswith("eta 1m00s (6 items of blocked tenants not counted)")
    for item in alpha[2:]:
        model.update(replace(item, phase=Phase.SUCCEEDED))
    assert model.eta() == "done (6 items of blocked tenants not counted)"
