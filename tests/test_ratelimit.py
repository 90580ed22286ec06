"""The per-host token bucket, on a virtual clock: no test here sleeps for real."""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import pytest

from orchestrator.ims.ratelimit import RECOVERY_SECONDS, SUBMIT, RateLimits, Slots, TokenBucket
from tests.virtual_clock import InstantClock, VirtualClock


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


async def test_each_key_has_its_own_budget_at_each_host() -> None:
    """One bucket per (access key, host), host case-insensitive, the same object for every
    caller; another key or host is untouched by this one's spending."""
    clock = InstantClock()
    limits = RateLimits(1.0, clock)
    first = limits.for_key("AK1", "ims.cn-north-4.myhuaweicloud.com")
    assert limits.for_key("AK1", "IMS.cn-north-4.myhuaweicloud.com") is first
    assert limits.for_key("AK1", "ims.cn-east-3.myhuaweicloud.com") is not first
    assert limits.for_key("AK2", "ims.cn-north-4.myhuaweicloud.com") is not first
    await limits.admit("AK1", "ims.cn-north-4.myhuaweicloud.com")
    await limits.admit("AK2", "ims.cn-north-4.myhuaweicloud.com")
    await limits.admit("AK1", "ims.cn-east-3.myhuaweicloud.com")
    assert clock.sleeps == []
    await limits.admit("AK1", "ims.cn-north-4.myhuaweicloud.com")
    assert clock.sleeps == pytest.approx([1.0])


async def test_the_host_cap_is_shared_by_all_keys() -> None:
    """``host_requests_per_second`` spaces the requests of every key to one host."""
    clock = InstantClock()
    limits = RateLimits(100.0, clock, host_rate=1.0)
    await limits.admit("AK1", "h")
    await limits.admit("AK2", "h")
    assert clock.sleeps == pytest.approx([1.0])


def test_default_burst_is_one_second_of_requests() -> None:
    """Without an explicit burst, a key may send one second's worth at once."""
    limits = RateLimits(20.0, InstantClock())
    assert limits.for_key("AK", "h").tokens == pytest.approx(20.0)
    assert RateLimits(0.5, InstantClock()).for_key("AK", "h").tokens == pytest.approx(1.0)


async def test_a_refusal_pauses_every_request_of_the_key_until_retry_after() -> None:
    """After a 429 with Retry-After 5, no request of that key to that host goes before 5 s
    have passed, whoever asks; another key is not paused."""
    clock = VirtualClock()
    limits = RateLimits(100.0, clock)
    start = clock.now()
    limits.for_key("AK1", "h").refused(5.0)
    went: list[tuple[str, float]] = []

    async def request(key: str) -> None:
        await limits.admit(key, "h")
        went.append((key, clock.now() - start))

    async with anyio.create_task_group() as group:
        group.start_soon(clock.autojump)
        async with anyio.create_task_group() as requests:
            for _ in range(10):
                requests.start_soon(request, "AK1")
            requests.start_soon(request, "AK2")
        group.cancel_scope.cancel()
    assert ("AK2", 0.0) in went
    assert min(at for key, at in went if key == "AK1") >= 5.0


async def test_the_rate_halves_on_a_refusal_and_grows_back_slowly() -> None:
    """Multiplicative decrease on a refusal, additive increase while none comes."""
    clock = InstantClock()
    bucket = RateLimits(40.0, clock).for_key("AK", "h")
    bucket.refused(1.0)
    assert bucket.rate == pytest.approx(20.0)
    bucket.refused(1.0)
    assert bucket.rate == pytest.approx(10.0)
    clock.advance(1.0 + RECOVERY_SECONDS / 4)  # the pause, then a quarter of the recovery
    assert bucket.rate == pytest.approx(20.0)
    clock.advance(RECOVERY_SECONDS)
    assert bucket.rate == pytest.approx(40.0)


async def test_a_submission_goes_before_waiting_polls_and_urgent_polls_first() -> None:
    """Waiters are served by priority: the copy POST first, then the lowest poll priority."""
    clock = VirtualClock()
    bucket = TokenBucket(1.0, 1, clock)
    await bucket.acquire()  # empty now: everyone below waits
    order: list[str] = []

    async def request(name: str, priority: float) -> None:
        await bucket.acquire(priority)
        order.append(name)

    async with anyio.create_task_group() as group:
        group.start_soon(clock.autojump)
        async with anyio.create_task_group() as requests:
            for name, priority in (("far", 500.0), ("near", 5.0), ("copy", SUBMIT)):
                requests.start_soon(request, name, priority)
                await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()
    assert order == ["copy", "near", "far"]


async def test_a_waiter_cancelled_in_the_queue_takes_nothing() -> None:
    """A request given up while it waits leaves its place to the next one."""
    clock = VirtualClock()
    bucket = TokenBucket(1.0, 1, clock)
    await bucket.acquire()
    done: list[str] = []

    async def second() -> None:
        await bucket.acquire()
        done.append("second")

    given_up = anyio.CancelScope()

    async def first() -> None:
        with given_up:
            await bucket.acquire()
            done.append("first")

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        for _ in range(3):
            await anyio.lowlevel.checkpoint()  # first is queued, sleeping on the clock
        given_up.cancel()
        group.start_soon(clock.autojump)
        async with anyio.create_task_group() as requests:
            requests.start_soon(second)
        group.cancel_scope.cancel()
    assert done == ["second"]


async def test_try_acquire_takes_a_free_token_only() -> None:
    """The fast path of a request: a free token is taken at once; none when the bucket is
    empty or paused by a Retry-After."""
    clock = VirtualClock()
    bucket = TokenBucket(1.0, 2, clock)
    assert bucket.try_acquire()
    assert bucket.try_acquire()
    assert not bucket.try_acquire()  # empty
    clock.advance(1.0)
    assert bucket.try_acquire()
    bucket.refused(5.0)
    clock.advance(2.0)
    assert not bucket.try_acquire()  # paused, though a token has refilled
    clock.advance(4.0)
    assert bucket.try_acquire()


async def test_try_acquire_leaves_a_token_to_a_queued_waiter() -> None:
    """A token freed while a waiter is queued is the waiter's, not a newcomer's."""
    clock = VirtualClock()
    bucket = TokenBucket(1.0, 1, clock)
    assert bucket.try_acquire()
    async with anyio.create_task_group() as group:
        group.start_soon(bucket.acquire)
        await anyio.lowlevel.checkpoint()  # queued, sleeping on the clock for its token
        clock.advance(1.0)
        assert not bucket.try_acquire()
        group.cancel_scope.cancel()
    assert RateLimits(1.0, clock, host_rate=5.0).try_admit("AK", "h") is False  # host cap: wait


async def test_a_slot_handed_to_a_waiter_then_cancelled_goes_on_to_the_next() -> None:
    """The slot reached the waiter, then its task was cancelled before it could run: the
    waiter hands the slot on (a lost one would leave the next waiter hanging)."""
    slots = Slots(1)
    slots.acquire_nowait()
    got: list[str] = []

    async def waiter(name: str) -> None:
        await slots.acquire(1.0)
        got.append(name)
        slots.release()

    first = asyncio.ensure_future(waiter("first"))
    await anyio.lowlevel.checkpoint()
    second = asyncio.ensure_future(waiter("second"))
    await anyio.lowlevel.checkpoint()
    slots.release()  # to "first"...
    first.cancel()  # ...whose cancellation comes before it runs again
    with anyio.fail_after(5):
        await asyncio.gather(first, second, return_exceptions=True)
    assert first.cancelled()
    assert got == ["second"]
    assert slots.value == 1


async def test_slots_go_by_priority_then_arrival_and_a_cancelled_waiter_is_passed_by() -> None:
    """Many waiters: each freed slot goes to the lowest priority, then the earliest; those
    cancelled while waiting are skipped; nothing is lost."""
    slots = Slots(2)
    slots.acquire_nowait()
    slots.acquire_nowait()
    order: list[str] = []
    scopes: dict[str, anyio.CancelScope] = {}

    async def waiter(name: str, priority: float) -> None:
        with scopes.setdefault(name, anyio.CancelScope()):
            await slots.acquire(priority)
            order.append(name)
            await anyio.lowlevel.checkpoint()
            slots.release()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for n, priority in enumerate([5.0, 1.0, 5.0, 0.0, 1.0, 3.0]):
                group.start_soon(waiter, f"w{n}", priority)
                await anyio.lowlevel.checkpoint()
            scopes["w4"].cancel()
            await anyio.lowlevel.checkpoint()
            slots.release()
            slots.release()
    assert order == ["w3", "w1", "w5", "w0", "w2"]
    assert slots.value == 2
