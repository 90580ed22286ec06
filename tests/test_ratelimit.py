"""The per-host token bucket, on a virtual clock: no test here sleeps for real."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from orchestrator.ims.ratelimit import RateLimits, TokenBucket
from tests.virtual_clock import InstantClock


async def test_burst_is_available_at_once() -> None:
    """A fresh bucket lets `burst` requests through without waiting."""
    clock = InstantClock()
    bucket = TokenBucket(2.0, 5, clock)
    for _ in range(5):
        await bucket.acquire()
    assert clock.sleeps == []


async def test_after_the_burst_requests_are_spaced_by_the_rate() -> None:
    """Past the burst, each request waits 1/rate on the clock."""
    clock = InstantClock()
    start = clock.now()
    bucket = TokenBucket(4.0, 1, clock)
    for _ in range(5):
        await bucket.acquire()
    assert clock.now() - start == pytest.approx(1.0)
    assert clock.sleeps == pytest.approx([0.25] * 4)


async def test_tokens_refill_with_time_up_to_the_burst() -> None:
    """Quiet time refills the bucket, but never beyond the burst."""
    clock = InstantClock()
    bucket = TokenBucket(10.0, 3, clock)
    for _ in range(3):
        await bucket.acquire()
    assert bucket.tokens == pytest.approx(0.0)
    clock.advance(0.15)
    assert bucket.tokens == pytest.approx(1.5)
    clock.advance(3600)
    assert bucket.tokens == pytest.approx(3.0)


async def test_concurrent_waiters_share_the_rate() -> None:
    """Ten tasks through a 5/s bucket with burst 1 take 9/5 s of virtual time, in order."""
    clock = InstantClock()
    start = clock.now()
    bucket = TokenBucket(5.0, 1, clock)
    order: list[int] = []

    async def request(number: int) -> None:
        await bucket.acquire()
        order.append(number)

    async with anyio.create_task_group() as group:
        for number in range(10):
            group.start_soon(request, number)
            await anyio.lowlevel.checkpoint()  # let it queue, so the arrival order is known
    assert clock.now() - start == pytest.approx(1.8)
    assert order == list(range(10))


async def test_a_clock_stepped_backwards_does_not_stall_the_bucket() -> None:
    """After an NTP step back, the bucket waits 1/rate, not the stepped-back time."""
    clock = InstantClock()
    bucket = TokenBucket(1.0, 1, clock)
    await bucket.acquire()
    clock.advance(-3600)
    await bucket.acquire()
    assert clock.sleeps == pytest.approx([1.0])


async def test_zero_rate_means_no_limit() -> None:
    """A rate of 0 (limits switched off) never waits."""
    clock = InstantClock()
    bucket = TokenBucket(0.0, 1, clock)
    for _ in range(100):
        await bucket.acquire()
    assert clock.sleeps == []


def test_burst_below_one_is_refused() -> None:
    """A bucket that could never hold a whole token is a configuration error."""
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1.0, 0.5, InstantClock())


async def test_hosts_have_separate_buckets_shared_by_all_clients() -> None:
    """One bucket per host (case-insensitive), the same object for every caller."""
    clock = InstantClock()
    limits = RateLimits(1.0, clock)
    first = limits.for_host("ims.cn-north-4.myhuaweicloud.com")
    assert limits.for_host("IMS.cn-north-4.myhuaweicloud.com") is first
    other = limits.for_host("ims.cn-east-3.myhuaweicloud.com")
    assert other is not first
    await first.acquire()
    await other.acquire()  # another host's budget is untouched
    assert clock.sleeps == []
    await first.acquire()
    assert clock.sleeps == pytest.approx([1.0])


def test_default_burst_is_one_second_of_requests() -> None:
    """Without an explicit burst, a host may send one second's worth at once."""
    limits = RateLimits(20.0, InstantClock())
    assert limits.for_host("h").tokens == pytest.approx(20.0)
    assert RateLimits(0.5, InstantClock()).for_host("h").tokens == pytest.approx(1.0)
