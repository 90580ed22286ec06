"""The e2e tests' tag: which fixtures start the simulator in its own process.

A test is marked e2e exactly when it starts ims-migrate as a process (through such a fixture or
by itself); ``tests/conftest.py`` fails a test whose mark says otherwise.

The harness itself (``Cloud``: the simulator and the CLI as processes) is
``orchestrator.simulator.harness``, shared with ``scripts/soak``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def starts_process(fixture: F) -> F:
    """Mark a fixture function as starting the simulator in its own process: a test uses such a
    fixture exactly when it is marked e2e (checked when the tests are collected)."""
    setattr(fixture, "starts_process", True)  # noqa: B010 -- an attribute mypy cannot see
    return fixture
