"""structlog setup: every event as one JSON line in the run's ``events.jsonl``.

The CLI configures structlog once (:func:`configure`); a run then sends its events to its
state dir's file for as long as it holds it open (:func:`events_to`). Events logged outside a
run go nowhere: the terminal hears from the CLI, in the same words. Keys that could hold a
secret are masked before anything is written, whoever logs them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TextIO

import structlog

from orchestrator.state.checkpoint import repair_jsonl
from orchestrator.state.store import StoreError

EVENTS = "events.jsonl"
ROTATE_BYTES = 50 * 2**20
KEEP_ROTATED = 3
SECRET_KEYS = frozenset(
    {"sk", "secret_key", "secret", "password", "security_token", "authorization", "x-auth-token"}
)


def rotate(path: Path, max_bytes: int = ROTATE_BYTES, keep: int = KEEP_ROTATED) -> bool:
    """Rename ``events.jsonl`` to ``.1`` (shifting older ones) once it passes ``max_bytes``."""
    try:
        if path.stat().st_size < max_bytes:
            return False
    except FileNotFoundError:
        return False
    for index in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{index + 1}"))
    path.replace(path.with_name(f"{path.name}.1"))
    return True


# key -> whether it names a secret, whatever its case: the keys are the code's own few names,
# each lowered once rather than for every key of every event.
_SECRET: dict[str, bool] = {}
_SECRET_MEMO = 4096  # names remembered at most (an event built from data cannot grow it)


def mask_secrets(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in event:
        secret = _SECRET.get(key)
        if secret is None:
            secret = key.lower() in SECRET_KEYS
            if len(_SECRET) < _SECRET_MEMO:
                _SECRET[key] = secret
        if secret:
            event[key] = "***"
    return event


# One encoder for every event (json.dumps builds one per call with these options).
_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode


class EventsFile:
    """The open ``events.jsonl`` of one run: a JSON line per event, flushed at once."""

    def __init__(self, path: Path, handle: TextIO) -> None:
        self.path = path
        self.handle: TextIO | None = handle

    def write(self, event: MutableMapping[str, Any]) -> None:
        if self.handle is None:
            return
        try:
            self.handle.write(_ENCODE(event) + "\n")
            self.handle.flush()
        except OSError as exc:  # disk full: the state dir cannot be written (exit 74)
            self.close()
            raise StoreError(
                f"cannot write the event log {self.path}: "
                f"{exc.strerror or exc} (free disk space or fix permissions, then run again)"
            ) from exc

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()


_EVENTS: ContextVar[EventsFile | None] = ContextVar("ims_migrate_events", default=None)


class UtcStamper:
    """``timestamp``: what ``structlog.processors.TimeStamper(fmt="iso", utc=True)`` writes
    (``2026-01-02T03:04:05.678901Z``, no fraction at a whole second), with the date and time
    formatted once per second rather than through a datetime for every event."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _logger: object, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = self._now()
        second = math.floor(now)
        micro = round((now - second) * 1e6)
        if micro >= 1_000_000:  # rounded up to the next second, as datetime does
            second, micro = second + 1, 0
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event["timestamp"] = f"{self._prefix}.{micro:06d}Z" if micro else f"{self._prefix}Z"
        return event


def write_event(_logger: object, _method: str, event: MutableMapping[str, Any]) -> str:
    """The last processor: the event to the current run's file, if there is one."""
    events = _EVENTS.get()
    if events is not None:
        events.write(event)
    raise structlog.DropEvent


def configure() -> None:
    """Route structlog's events to the running list's ``events.jsonl`` (once, by the CLI).

    Loggers are cached on first use (an event no longer assembles a new bound logger: ~7 us
    each, six events per item). A cached logger keeps the processor *list* it found, so the
    list is changed in place, never replaced: whoever configures structlog later in this
    process (the tests, ``structlog.testing.capture_logs``) must change it in place too."""
    processors = structlog.get_config()["processors"]
    # No ``merge_contextvars``: nothing binds context variables (it copied the context for
    # every event).
    processors[:] = [
        structlog.processors.add_log_level,
        UtcStamper(),
        mask_secrets,
        write_event,
    ]
    structlog.configure(processors=processors, cache_logger_on_first_use=True)


@contextlib.contextmanager
def events_to(state_dir: Path) -> Iterator[EventsFile]:
    """Send this task's (and its children's) events to ``state_dir/events.jsonl``, repaired
    and rotated first, until the block ends."""
    path = state_dir / EVENTS
    try:
        repair_jsonl(path)
        rotate(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:  # a directory in the way, no permission: exit 74
        raise StoreError(
            f"cannot open the event log {path}: {exc.strerror or exc} (fix it, then run again)"
        ) from None
    events = EventsFile(path, os.fdopen(fd, "a", encoding="utf-8"))
    token = _EVENTS.set(events)
    try:
        yield events
    finally:
        _EVENTS.reset(token)
        events.close()
