"""The event loop every command runs on: uvloop where it is installed, else asyncio's own.

A run spends most of its CPU in the event loop and its sockets (four or five requests per
image, each a handful of callbacks). uvloop does that work in C: at 20,000 rows / 400 tenants
it takes about a sixth off the tool's CPU (``scripts/bench many``). It is a dependency on
Linux and macOS; where it is missing (Windows, or a build without it) the commands run on
asyncio's loop, unchanged.

``IMS_MIGRATE_EVENT_LOOP=asyncio`` runs on asyncio's own loop anyway (to compare, or to rule
the loop out when something looks wrong); ``=uvloop`` insists on uvloop (exit 2 without it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio

from orchestrator.commands.common import UsageError

LOOP_ENV = "IMS_MIGRATE_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def backend_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """anyio's options for the asyncio backend: uvloop unless ``LOOP_ENV`` says otherwise."""
    choice = environ.get(LOOP_ENV, "").strip().lower() or "auto"
    if choice not in CHOICES:
        raise UsageError(f"{LOOP_ENV}={environ[LOOP_ENV]!r}: expected one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return {}
    try:
        import uvloop  # noqa: F401 -- only asked whether it is there
    except ImportError:
        if choice == "uvloop":
            raise UsageError(
                f"{LOOP_ENV}=uvloop, but uvloop is not installed: "
                "pip install uvloop, or unset it to use asyncio's loop"
            ) from None
        return {}
    return {"use_uvloop": True}


def run_loop(func: Callable[[], Awaitable[T]], environ: Mapping[str, str]) -> T:
    """``func()`` run to its end on the chosen event loop."""
    return anyio.run(func, backend="asyncio", backend_options=backend_options(environ))


def loop_name() -> str:
    """The running event loop's kind, as the run's start event names it."""
    import asyncio

    loop = type(asyncio.get_running_loop())
    return "uvloop" if loop.__module__.startswith("uvloop") else "asyncio"
