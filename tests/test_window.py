"""One account's window: the order items go in, tenants taking turns, the cap, back-pressure."""

import random

import pytest

from orchestrator.core.model import Item, Row
from orchestrator.core.order import Order
from orchestrator.core.units import GIB
from orchestrator.engine.window import Window


def item(line: int, gib: float, *, tenant: str = "t1", priority: int = 0) -> Item:
    row = Row(
        line=line,
        tenant=tenant,
        image_id=f"img-{tenant}-{line}",
        source_region="cn-north-4",
        target_region="cn-east-3",
        priority=priority,
    )
    return Item(row=row, size_bytes=int(gib * GIB))


def window(limit: int = 5, order: Order = Order.LARGEST) -> Window:
    return Window("acct", limit, backoff_min=1.0, backoff_max=60.0, order=order)


def drain(w: Window, now: float = 0.0) -> list[Item]:
    """Every item the window hands out, freeing each slot at once."""
    out = []
    while (next_item := w.next_ready(now)) is not None:
        w.take()
        out.append(next_item)
        w.release()
    return out


def test_largest_first_within_a_tenant() -> None:
    """LPT: the biggest images go first, whatever the list's order."""
    w = window()
    for line, gib in enumerate([3, 90, 12, 40, 1], start=2):
        w.enqueue(item(line, gib))
    assert [i.size_bytes // GIB for i in drain(w) if i.size_bytes] == [90, 40, 12, 3, 1]


def test_priority_goes_before_size() -> None:
    """A higher priority column goes before a larger image."""
    w = window()
    w.enqueue(item(2, 100))
    w.enqueue(item(3, 1, priority=5))
    w.enqueue(item(4, 50, priority=5))
    assert [i.row.line for i in drain(w)] == [4, 3, 2]


def test_list_order_is_the_naive_strategy() -> None:
    """order="list" hands items out in the list's order, ignoring size and priority."""
    w = window(order=Order.LIST)
    for line, gib in [(5, 100), (2, 1), (4, 50), (3, 7)]:
        w.enqueue(item(line, gib, priority=line == 5))
    assert [i.row.line for i in drain(w)] == [2, 3, 4, 5]


def test_tenants_of_one_account_take_turns() -> None:
    """Two tenants sharing a window alternate, so a tenant of big images never starves one of
    small images; each tenant's own items stay largest first."""
    w = window()
    for n in range(4):
        w.enqueue(item(10 + n, 200 + n, tenant="big"))
        w.enqueue(item(20 + n, 1 + n, tenant="small"))
    handed = drain(w)
    assert [i.row.tenant for i in handed[:4]] in (
        ["big", "small", "big", "small"],
        ["small", "big", "small", "big"],
    )
    small = [i.size_bytes or 0 for i in handed if i.row.tenant == "small"]
    assert small == sorted(small, reverse=True)


def test_no_more_than_the_cap_at_once() -> None:
    """Slots run out at the limit; a release lets the next item go."""
    w = window(limit=2)
    for line in range(2, 6):
        w.enqueue(item(line, line))
    first, second = w.next_ready(0.0), None
    w.take()
    second = w.next_ready(0.0)
    w.take()
    assert first is not None
    assert second is not None
    assert w.next_ready(0.0) is None
    w.release()
    assert w.next_ready(0.0) is not None
    assert w.max_in_use == 2


def test_back_pressure_shrinks_the_window_and_waits() -> None:
    """IMG.0060 with 3 in flight: the window shrinks to the 2 others and waits before more."""
    w = window()
    for line in range(2, 10):
        w.enqueue(item(line, line))
    for _ in range(3):
        assert w.next_ready(0.0) is not None
        w.take()
    wait = w.back_pressure(0.0, random.Random(1))
    w.release()  # the refused item gives its slot back
    assert w.capacity == 2
    assert wait >= 1.0
    assert w.next_ready(0.0) is None
    assert w.wake_at(0.0) is None  # full: the next release wakes it, not the clock
    w.release()
    assert w.wake_at(0.0) == pytest.approx(wait)
    assert w.next_ready(wait) is not None


def test_each_accepted_copy_grows_the_window_back() -> None:
    """After back-pressure, every copy the cloud accepts gives one slot back, up to the limit."""
    w = window()
    for _ in range(4):
        w.take()
    w.back_pressure(0.0, random.Random(1))
    assert w.capacity == 3
    for _ in range(5):
        w.started()
    assert w.capacity == 5
    assert w.back_pressure_streak == 0


def test_delayed_items_wait_for_their_time() -> None:
    """An item to retry later is not handed out before its time; wake_at says when."""
    w = window()
    w.enqueue(item(2, 10), ready_at=50.0)
    assert w.has_work()
    assert w.queued() == 1
    assert w.next_ready(10.0) is None
    assert w.wake_at(10.0) == 50.0
    ready = w.next_ready(50.0)
    assert ready is not None
    assert ready.row.line == 2
    assert w.queued() == 0
