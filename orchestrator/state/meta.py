"""The checkpoint's meta: what a state dir remembers about its runs, beside the items.

On disk it is the snapshot's ``"meta"`` object; a journal line ``{"meta": {...}}`` carries only
the keys a commit changed (a key that went back to its default, as null). The keys:

    version        META_VERSION of the code that wrote the snapshot (absent before RunMeta)
    list_path      the resolved path of the list the state dir belongs to
    list           what lets a resumed run skip checking its list again (state/recall.py):
                   {"fingerprint", "problems": [[line, column, message]], "warnings": [...]}
    blocked        tenant -> {"fingerprint", "code", "message", "at"}: credentials refused,
                   not tried again until they change (design I5)
    last_exit, last_reason, last_end     how the last run ended (exit code, why, when)
    speed_samples  [[size GiB, seconds]] of recent copies, for the speed model and ``plan``

Reading (:meth:`RunMeta.from_dict`) is tolerant where it can be without guessing:

- a missing key takes its default: a checkpoint written before this module (no ``version``)
  reads as it is, and its dead ``"finished"`` key is ignored;
- an unknown key (a later version's) is ignored, and gone from the next snapshot. A change
  that older code must not misread needs the snapshot's own version (checkpoint.VERSION),
  which older code refuses; the meta's version only names the shape it was written in;
- a known key of the wrong shape is damage: :class:`MetaError` (the checkpoint's reader
  makes it ``CheckpointCorrupt``), never a silent default -- except ``list``, a cache: a
  damaged one is forgotten and the list is simply checked again.

Pure values: no I/O. Change a meta by building a new one (``dataclasses.replace(store.meta,
...)``) and committing it whole; the store writes only the keys that differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

META_VERSION = 1

Spot = tuple[int, str, str]  # a problem of the list: line, column, message


class MetaError(ValueError):
    """A key of the checkpoint's meta has a shape this code cannot have written."""


@dataclass(frozen=True)
class ListMemory:
    """A checked list, as the next run recalls it (its rows are the checkpoint's items)."""

    fingerprint: str
    problems: tuple[Spot, ...] = ()
    warnings: tuple[Spot, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "problems": [list(p) for p in self.problems],
            "warnings": [list(w) for w in self.warnings],
        }

    @classmethod
    def from_dict(cls, value: object) -> ListMemory | None:
        """None when ``value`` is not a list memory this code wrote (forget it, check again)."""
        if not isinstance(value, dict) or not isinstance(value.get("fingerprint"), str):
            return None
        problems, warnings = _spots(value.get("problems")), _spots(value.get("warnings"))
        if problems is None or warnings is None:
            return None
        return cls(value["fingerprint"], problems, warnings)


def _spots(value: object) -> tuple[Spot, ...] | None:
    if not isinstance(value, list):
        return None
    out = []
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 3 and _is_int(entry[0])):
            return None
        line, column, message = entry
        out.append((int(line), str(column), str(message)))
    return tuple(out)


@dataclass(frozen=True)
class BlockedKey:
    """A tenant whose credentials were refused: ``fingerprint`` names the key pair (never the
    secret), ``code``/``message`` what the cloud answered, ``at`` when (epoch seconds)."""

    fingerprint: str
    code: str
    message: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "code": self.code,
            "message": self.message,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, value: object) -> BlockedKey:
        if not isinstance(value, dict):
            raise MetaError(f"a blocked tenant is {_kind(value)}, not an object")
        fingerprint, code = value.get("fingerprint"), value.get("code")
        message, at = value.get("message"), value.get("at")
        if not (isinstance(fingerprint, str) and isinstance(code, str)):
            raise MetaError("a blocked tenant has no key fingerprint or no error code")
        if not isinstance(message, str) or not _is_number(at):
            raise MetaError("a blocked tenant has no error message or no time")
        return cls(fingerprint, code, message, float(at))


@dataclass(frozen=True)
class RunMeta:
    """The checkpoint's meta, typed (see the module's docstring for the keys on disk)."""

    version: int = META_VERSION
    list_path: str | None = None
    checked_list: ListMemory | None = None  # stored as "list"
    blocked: Mapping[str, BlockedKey] = field(default_factory=dict)
    last_exit: int | None = None
    last_reason: str | None = None
    last_end: float | None = None
    speed_samples: tuple[tuple[float, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored; keys at their default are left out."""
        out: dict[str, Any] = {"version": self.version}
        if self.list_path is not None:
            out["list_path"] = self.list_path
        if self.checked_list is not None:
            out["list"] = self.checked_list.to_dict()
        if self.blocked:
            out["blocked"] = {tenant: why.to_dict() for tenant, why in self.blocked.items()}
        last = {
            "last_exit": self.last_exit,
            "last_reason": self.last_reason,
            "last_end": self.last_end,
        }
        out.update({key: value for key, value in last.items() if value is not None})
        if self.speed_samples:
            out["speed_samples"] = [list(sample) for sample in self.speed_samples]
        return out

    @classmethod
    def from_dict(cls, value: object) -> RunMeta:
        """The meta stored as ``value`` (of any version: see the module's docstring), in the
        current shape. Raises MetaError when a key is damaged."""
        if not isinstance(value, dict):
            raise MetaError(f"the meta is {_kind(value)}, not an object")
        blocked = _get(value, "blocked", dict, {})
        samples = _get(value, "speed_samples", list, [])
        if not all(_is_pair(s) for s in samples):
            raise MetaError("speed_samples holds something other than [size, seconds] pairs")
        last_exit = value.get("last_exit")
        if last_exit is not None and not _is_int(last_exit):
            raise MetaError(f"last_exit is {_kind(last_exit)}, not an exit code")
        last_end = value.get("last_end")
        if last_end is not None and not _is_number(last_end):
            raise MetaError(f"last_end is {_kind(last_end)}, not a time")
        return cls(
            list_path=_get(value, "list_path", str, None),
            checked_list=ListMemory.from_dict(value.get("list")),
            blocked={str(t): BlockedKey.from_dict(why) for t, why in blocked.items()},
            last_exit=None if last_exit is None else int(last_exit),
            last_reason=_get(value, "last_reason", str, None),
            last_end=None if last_end is None else float(last_end),
            speed_samples=tuple((float(s[0]), float(s[1])) for s in samples),
        )

    def changes(self, since: RunMeta) -> dict[str, Any]:
        """The stored keys that differ from ``since``'s (one gone back to its default: None),
        as a journal line carries them."""
        new, old = self.to_dict(), since.to_dict()
        keys = [*new, *(key for key in old if key not in new)]
        return {key: new.get(key) for key in keys if new.get(key) != old.get(key)}


def _get(value: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    found = value.get(key)
    if found is None:
        return default
    if not isinstance(found, kind):
        raise MetaError(f"{key} is {_kind(found)}, not {kind.__name__}")
    return found


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_pair(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
