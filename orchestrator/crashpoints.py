"""Test-only crash switch: ``IMS_MIGRATE_CRASH_AT=NAME:N`` kills the process (SIGKILL) the N-th
time it reaches the step NAME, so the crash tests can stop it at every dangerous moment.

Steps: ``before_intent``, ``after_intent`` (intent saved, POST not sent), ``after_reply`` (job id
received, not yet saved), ``save`` (inside a checkpoint write), ``polling``, ``after_terminal``.
Unset (always, outside tests), :func:`reach` costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "IMS_MIGRATE_CRASH_AT"
_counts: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    name, _, nth = spec.partition(":")
    return name, int(nth or "1")


_TARGET = _target()


def reach(name: str) -> None:
    if _TARGET is None or _TARGET[0] != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
