"""Whether the running task's cancel scopes say it is cancelled, read cheaply.

A request taken at once (its budget and connection slot free) has no wait of its own before
the wire, so the client asks anyio's ``checkpoint_if_cancelled`` to hear a cancellation first:
a cancelled task sends nothing. That call costs more than the rest of the budget's fast path
(the async library sniffed, the backend looked up, two coroutines, the scope chain walked
through properties): 1.5-2 % of a run's CPU at four or five requests per item.

:func:`cancel_pending` reads what ``checkpoint_if_cancelled`` looks for on anyio's asyncio
backend (the only one the tool runs on, ``eventloop.py``): from the task's innermost cancel
scope outwards, a scope whose cancel was called before a shielded one. Only when it says so
does the caller await ``checkpoint_if_cancelled``, which raises the cancellation as ever::

    if cancel_pending():
        await anyio.lowlevel.checkpoint_if_cancelled()

It reads anyio's private task states: if they are not there as expected (another anyio), it
answers True every time, and the caller pays for the public checkpoint as before.
``tests/test_scopes.py`` holds it to anyio's own answer (``current_effective_deadline`` is
``-inf`` exactly when a cancel is pending) in nested, shielded and cancelled scopes.
"""

from __future__ import annotations

import asyncio
import os
import threading
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any


def _always() -> bool:
    return True


def _same(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    return task


def _reader() -> Callable[[], bool]:
    try:
        from anyio._backends import _asyncio as backend

        states: Mapping[asyncio.Task[Any], Any] = backend._task_states
        probe = backend.CancelScope()
        for name in ("_cancel_called", "_shield", "_parent_scope"):
            getattr(probe, name)
    except (ImportError, AttributeError):
        return _always
    running_loop = asyncio.get_running_loop
    task_of, state_of, key_of = _lookups(states)

    # The running loop, kept from one call to the next (``get_running_loop`` is a getpid()
    # system call on Python 3.11, ~0.4 us here): a loop that is running, in the thread that
    # took it, is that thread's running loop (a thread runs one loop at a time); a fork forgets
    # it (the child's running loop is not the parent's, as ``get_running_loop`` checks).
    held_thread: int | None = None
    held_loop: asyncio.AbstractEventLoop | None = None
    thread_id = threading.get_ident

    def forget() -> None:
        nonlocal held_thread, held_loop
        held_thread = held_loop = None

    os.register_at_fork(after_in_child=forget)

    def cancel_pending() -> bool:
        """True if the running task's innermost unshielded cancel scopes hold a cancel."""
        nonlocal held_thread, held_loop
        loop = held_loop
        if loop is None or held_thread != thread_id() or not loop.is_running():
            loop = held_loop = running_loop()
            held_thread = thread_id()
        task = task_of(loop)
        state = None if task is None else state_of(key_of(task))
        if state is None:  # not in a task, or not in one of anyio's
            return False
        scope = state.cancel_scope
        while scope is not None:
            if scope._cancel_called:
                return True
            if scope._shield:
                return False
            scope = scope._parent_scope
        return False

    return cancel_pending


def _lookups(
    states: Mapping[asyncio.Task[Any], Any],
) -> tuple[
    Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None],
    Callable[[Any], Any],
    Callable[[asyncio.Task[Any]], Any],
]:
    """The running task of a loop, a task's anyio state, and the key of that state.

    Python 3.11 spends a frame of its own on each of the two look-ups (a third of the
    reading): ``asyncio.current_task()`` is ``_current_tasks.get(get_running_loop())``, and
    the states' ``WeakKeyDictionary.get(task)`` is ``data.get(ref(task))``; made of those
    C calls here, each one as it is when it is not so (a C current_task from Python 3.12)."""
    tasks = getattr(asyncio.tasks, "_current_tasks", None)
    task_of: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = (
        tasks.get
        if isinstance(asyncio.current_task, types.FunctionType) and isinstance(tasks, dict)
        else asyncio.current_task
    )
    data = getattr(states, "data", None)
    state_of: Callable[[Any], Any] = states.get
    key_of: Callable[[asyncio.Task[Any]], Any] = _same
    if type(states) is weakref.WeakKeyDictionary and isinstance(data, dict):
        state_of, key_of = data.get, weakref.ref
    return task_of, state_of, key_of


cancel_pending: Callable[[], bool] = _reader()
