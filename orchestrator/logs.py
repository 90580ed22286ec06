"""structlog setup: every event as one JSON line in ``events.jsonl``; humans see a short line.

The file gets everything (INFO and up); the terminal gets warnings and errors (or, with
``quiet``, errors only), so a cron job mails only what needs a look. Keys that could hold a
secret are masked before anything is written, whoever logs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, MutableMapping
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
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


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


def mask_secrets(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in event:
        if key.lower() in SECRET_KEYS:
            event[key] = "***"
    return event


def human_line(event: MutableMapping[str, Any]) -> str:
    """``LEVEL event key=value ...`` with the noisy keys left out."""
    level = str(event.get("level", "info")).upper()
    parts = [f"{level:<7}", str(event.get("event", ""))]
    for key, value in event.items():
        if key in ("event", "level", "timestamp") or value is None or value == "":
            continue
        parts.append(f"{key}={value}")
    return " ".join(parts)


class Sink:
    """The last processor: the JSON line to the events file, a short line to the terminal."""

    def __init__(self, events: TextIO | None, stderr: TextIO | None, stderr_level: int) -> None:
        self.events = events
        self.stderr = stderr
        self.stderr_level = stderr_level
        self.listeners: list[Callable[[MutableMapping[str, Any]], None]] = []
        self.path: Path | None = None  # of the events file, for messages

    def __call__(self, _logger: object, _method: str, event: MutableMapping[str, Any]) -> str:
        if self.events is not None:
            try:
                self.events.write(json.dumps(event, default=str, separators=(",", ":")) + "\n")
                self.events.flush()
            except OSError as exc:  # disk full: the state dir cannot be written (exit 74)
                events, self.events = self.events, None
                with contextlib.suppress(OSError):
                    events.close()
                raise StoreError(
                    f"cannot write the event log {self.path or EVENTS}: "
                    f"{exc.strerror or exc} (free disk space or fix permissions, then run again)"
                ) from exc
        level = _LEVELS.get(str(event.get("level")), 20)
        if self.stderr is not None and level >= self.stderr_level:
            self.stderr.write(human_line(event) + "\n")
            self.stderr.flush()
        for listener in self.listeners:
            listener(event)
        raise structlog.DropEvent


def configure(
    state_dir: Path | None, *, quiet: bool = False, stderr: TextIO | None = sys.stderr
) -> Sink:
    """Route structlog to ``state_dir/events.jsonl`` (repaired and rotated first) and stderr."""
    events: TextIO | None = None
    if state_dir is not None:
        path = state_dir / EVENTS
        repair_jsonl(path)
        rotate(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        events = os.fdopen(fd, "a", encoding="utf-8")
    sink = Sink(events, stderr, _LEVELS["error"] if quiet else _LEVELS["warning"])
    sink.path = state_dir / EVENTS if state_dir is not None else None
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_secrets,
            sink,
        ],
        cache_logger_on_first_use=False,
    )
    return sink


def close(sink: Sink) -> None:
    if sink.events is not None:
        sink.events.close()
        sink.events = None
