"""``cancel_pending`` says what anyio's ``checkpoint_if_cancelled`` would act on: a cancel
called on the running task's scopes before a shielded one (anyio's own word for it:
``current_effective_deadline()`` is ``-inf``)."""

from __future__ import annotations

import asyncio
import math

import anyio
import anyio.lowlevel
import pytest

from orchestrator.ims import scopes
from orchestrator.ims.scopes import cancel_pending

pytestmark = pytest.mark.anyio


def _anyio_says_cancelled() -> bool:
    return anyio.current_effective_deadline() == -math.inf


def _agree(expected: bool) -> None:
    assert cancel_pending() is expected
    assert _anyio_says_cancelled() is expected


def test_the_fast_reading_is_the_one_in_use() -> None:
    """With the anyio the tool pins, the private reading is there (else every request pays
    for the public checkpoint again, correct but slow)."""
    assert scopes.cancel_pending is not scopes._always


async def test_no_cancel_no_pending() -> None:
    _agree(False)
    with anyio.CancelScope():  # noqa: ASYNC100 -- read, not awaited
        _agree(False)
    with anyio.move_on_after(60):  # noqa: ASYNC100 -- read, not awaited
        _agree(False)


async def test_a_scope_cancelled_by_its_own_task_is_pending_until_it_is_left() -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        _agree(True)
        with anyio.CancelScope():  # noqa: ASYNC100 -- an inner scope inherits it
            _agree(True)
        with anyio.CancelScope(shield=True):  # noqa: ASYNC100 -- a shield stops it
            _agree(False)
            with anyio.CancelScope() as inner:  # noqa: ASYNC100 -- read, not awaited
                _agree(False)
                inner.cancel()
                _agree(True)  # a cancel inside the shield counts
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await anyio.lowlevel.checkpoint_if_cancelled()
    _agree(False)


async def test_a_cancel_that_came_with_the_wake_up_is_pending() -> None:
    """The task woken by a done future in the same turn as another task cancels its scope:
    anyio delivers the cancel only on the next turn, so the woken task runs first, and only
    the check tells it."""
    seen: list[tuple[bool, bool]] = []
    ready = asyncio.get_running_loop().create_future()

    async def waiter(task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await ready
        seen.append((cancel_pending(), _anyio_says_cancelled()))
        await anyio.lowlevel.checkpoint_if_cancelled()
        seen.append((False, False))  # never: the checkpoint raised

    async with anyio.create_task_group() as group:
        await group.start(waiter)
        ready.set_result(None)
        group.cancel_scope.cancel()
    assert seen == [(True, True)]


async def test_outside_an_anyio_task_nothing_is_pending() -> None:
    async def plain() -> bool:
        return cancel_pending()

    assert await asyncio.get_running_loop().create_task(plain()) is False
    assert await asyncio.ensure_future(plain()) is False


async def _cancelled_in_a_scope() -> tuple[bool, bool]:
    """cancel_pending's word and anyio's in a cancelled scope of a fresh task."""
    with anyio.CancelScope() as scope:  # noqa: ASYNC100 -- read, not awaited
        scope.cancel()
        return cancel_pending(), _anyio_says_cancelled()
    raise AssertionError("a scope cancelled before any checkpoint is not left early")


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_the_loop_kept_from_an_earlier_run_is_not_taken_for_the_next(use_uvloop: bool) -> None:
    """The running loop is kept from one call to the next: a loop that has stopped is not the
    one the next run's tasks run on (their cancels would go unseen)."""
    options = {"use_uvloop": use_uvloop}
    for _ in range(3):
        assert anyio.run(_cancelled_in_a_scope, backend_options=options) == (True, True)


async def test_the_loop_kept_in_one_thread_is_not_taken_in_another() -> None:
    """A thread that runs a loop of its own while this one runs (kept by the call before) reads
    its own task's scopes."""
    assert cancel_pending() is False  # this loop, kept
    seen = await anyio.to_thread.run_sync(anyio.run, _cancelled_in_a_scope)
    assert seen == (True, True)
    assert cancel_pending() is False
    with anyio.CancelScope() as scope:  # noqa: ASYNC100 -- read, not awaited
        scope.cancel()
        _agree(True)
