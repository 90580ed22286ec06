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
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from io import FileIO
from pathlib import Path
from typing import Any

import orjson
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
# each lowered once rather than for every key of every event. ``_SAFE``: those that do not (an
# event whose every key is one, as nearly all are, is looked over in one C call).
_SECRET: dict[str, bool] = {}
_SAFE: set[str] = set()
_SECRET_MEMO = 4096  # names remembered at most (an event built from data cannot grow it)


def mask_secrets(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if _SAFE.issuperset(event):
        return event
    for key in event:
        secret = _SECRET.get(key)
        if secret is None:
            secret = key.lower() in SECRET_KEYS
            if len(_SECRET) < _SECRET_MEMO:
                _SECRET[key] = secret
                if not secret:
                    _SAFE.add(key)
        if secret:
            event[key] = "***"
    return event


# One encoder for every event (json.dumps builds one per call with these options).
_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode
# The values orjson writes as json does (a float too, when it is finite).
_PLAIN = frozenset({str, int, bool, type(None)})
# What str.splitlines takes for a line's end (the event log's readers split by it, as would
# anyone's) and orjson writes unescaped: json escapes it.
_BREAKS = tuple(mark.encode() for mark in ("\x85", "\u2028", "\u2029"))


def event_line(event: Mapping[str, Any]) -> bytes:
    """The event's JSON line, as ``json.dumps(event, default=str)`` writes it (compact).

    Written by orjson (5 times faster) when every value is a str (a StrEnum too), an int, a
    bool, None or a finite float (every item's event): the same text, but outside ASCII
    unescaped UTF-8. Anything else is written by json, as before: a NaN or an infinity
    (orjson writes ``null``, silently), a nested value, any other type (an enum, a
    dataclass, a datetime: orjson writes its own form of those, not their ``str``), what
    orjson refuses (a lone surrogate, an int beyond 64 bits, a key that is not a str), and a
    text holding a character that ends a line for ``str.splitlines`` (json escapes it)."""
    if not _PLAIN.issuperset(map(type, event.values())):  # in C: nearly every event's case
        for value in event.values():
            kind = type(value)
            if kind in _PLAIN or (kind is float and value - value == 0.0):  # not NaN, not inf
                continue
            if not isinstance(value, str):  # a str's subclass (a StrEnum): its text, as json's
                return (_ENCODE(event) + "\n").encode()
    try:
        line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # orjson.JSONEncodeError
        return (_ENCODE(event) + "\n").encode()
    if not line.isascii() and any(mark in line for mark in _BREAKS):
        return (_ENCODE(event) + "\n").encode()
    return line


class EventsFile:
    """The open ``events.jsonl`` of one run: a JSON line per event, written at once (one
    ``write`` call, no buffer in between)."""

    def __init__(self, path: Path, handle: FileIO) -> None:
        self.path = path
        self.handle: FileIO | None = handle

    def write(self, event: MutableMapping[str, Any]) -> None:
        if self.handle is None:
            return
        line = event_line(event)
        try:
            while line:  # all of it, or an OSError (a short write: the disk is full)
                line = line[self.handle.write(line) :]
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
        return self.stamp(event)

    def stamp(self, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """What a call does (:func:`info` calls it so: a method, not an object's ``__call__``,
        which Python looks up and calls through a slot each time)."""
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


# The processor list :func:`configure` filled (structlog's own, changed in place: every cached
# logger holds it), what it put there, and those before the last (``write_event``). While the
# list holds what was put there, an info event may skip structlog (:func:`info`).
_CHAIN: list[Any] = []
_OWN: list[Any] = [None]  # never equal to a list of processors
_STAMPER = UtcStamper()  # configure's


def configure() -> None:
    """Route structlog's events to the running list's ``events.jsonl`` (once, by the CLI).

    Loggers are cached on first use (an event no longer assembles a new bound logger: ~7 us
    each, six events per item). A cached logger keeps the processor *list* it found, so the
    list is changed in place, never replaced: whoever configures structlog later in this
    process (the tests, ``structlog.testing.capture_logs``) must change it in place too."""
    global _CHAIN, _OWN, _STAMPER
    processors = structlog.get_config()["processors"]
    _STAMPER = UtcStamper()
    # No ``merge_contextvars``: nothing binds context variables (it copied the context for
    # every event). :func:`info` runs these same steps itself: change both together.
    processors[:] = [
        structlog.processors.add_log_level,
        _STAMPER,
        mask_secrets,
        write_event,
    ]
    structlog.configure(processors=processors, cache_logger_on_first_use=True)
    _CHAIN, _OWN = processors, list(processors)


def info(event: str, values: dict[str, Any]) -> bool:
    """``log.info(event, **values)`` of a logger with no bound values, written here at half
    its cost (an item's five events: ~7 us each saved); False, nothing done, unless the
    processors are still :func:`configure`'s own: the caller logs it through structlog then
    (a test's processors, ``capture_logs``).

    The same processors' work is done, on the same dict that structlog would build
    (``values``, then ``event``: changed in place), in the same order, without structlog's
    calls around them (a copy of the keywords at each of its three calls, a bound context
    copied, and the ``DropEvent`` its last processor raises), nor a loop over them: the
    processors are :func:`configure`'s own, each known (``tests/test_item_events.py``
    compares the lines of both ways, byte for byte)."""
    if _CHAIN != _OWN:
        return False
    events = _EVENTS.get()  # write_event's work, without its DropEvent
    if events is None:  # no run's log open: what the processors make goes nowhere
        return True
    values["event"] = event
    values["level"] = "info"  # structlog's add_log_level, for an info event
    _STAMPER.stamp(values)
    mask_secrets(None, "info", values)
    events.write(values)
    return True


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
    events = EventsFile(path, FileIO(fd, "ab"))
    token = _EVENTS.set(events)
    try:
        yield events
    finally:
        _EVENTS.reset(token)
        events.close()
