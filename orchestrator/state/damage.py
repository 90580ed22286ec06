"""Damage is loud: what a state dir's files must look like, and where they do not.

Only a torn *last* journal line is the normal result of a crash (cut off, as before). Any other
line that is not what the store writes, or a ``checkpoint.json`` of the wrong shape, is damage:
:class:`~orchestrator.state.store.StateDamaged` names the file, the line (or the item) and what is
wrong, before anything is written or called (exit 74). ``run --repair-state`` sets the damaged
files aside (:func:`set_aside`, renamed, never deleted) and rebuilds the state from the list; the
engine then finds the copies that exist by their tokens in the target regions (design I2).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.model import Phase, item_key
from orchestrator.state.store import StateDamaged

ADVICE = "look at it, or run again with --repair-state to set it aside and rebuild the state"
_PHASES = frozenset(phase.value for phase in Phase)
_KEY_FIELDS = ("tenant", "image_id", "target_region")


def item_problem(value: Any) -> str | None:
    """What is wrong with an item's stored dict, or None (the shape :func:`item_from_dict`
    needs; the values' types are the codec's to trust)."""
    if not isinstance(value, dict):
        return f"an item is {type(value).__name__}, not an object"
    row = value.get("row")
    if not isinstance(row, dict):
        return "an item has no row object"
    for name in _KEY_FIELDS:
        if not isinstance(row.get(name), str):
            return f"an item's row has no {name} text"
    phase = value.get("phase")
    if not isinstance(phase, str) or phase not in _PHASES:  # a list or object: unhashable
        return f"an item's phase {phase!r} is not one of {sorted(_PHASES)}"
    return None


def checked(where: Path | str, convert: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """``convert`` (or nothing), an item's damage a StateDamaged naming ``where`` (the file, or
    ``file:line``): found by :func:`item_problem`, or, on the hot path of a resume, by the
    converter's own errors."""

    def check(value: Any) -> Any:
        if convert is not None:  # 100,000 items on a resume: the converter's own errors say it
            try:
                return convert(value)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                why = item_problem(value) or f"an item cannot be read ({exc!r})"
                raise StateDamaged(f"{where}: {why}; {ADVICE}") from None
        problem = item_problem(value)
        if problem is not None:
            raise StateDamaged(f"{where}: {problem}; {ADVICE}")
        return value

    return check


def check_head(path: Path, snap: dict[str, Any]) -> None:
    """The snapshot's own fields: an integer generation, a meta object, an items object."""
    generation = snap.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool):
        raise StateDamaged(f"{path}: generation {generation!r} is not an integer; {ADVICE}")
    for name in ("meta", "items"):
        if not isinstance(snap.get(name, {}), dict):
            raise StateDamaged(f"{path}: {name} is not an object; {ADVICE}")


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """Each line with its number and whether it is the last one."""
    with path.open("rb") as handle:
        previous: bytes | None = None
        number = 0
        for line in handle:
            if previous is not None:
                yield number, previous, False
            number += 1
            previous = line
        if previous is not None:
            yield number, previous, True


def _entry(path: Path, number: int, line: bytes, last: bool) -> dict[str, Any] | None:
    """A journal line's object, None for a torn last line; StateDamaged for any other flaw of
    its envelope (an object with a generation number, and an item or meta)."""
    try:
        entry = json.loads(line)
    except ValueError as exc:
        if last:
            return None  # torn by a crash: everything after it is unconfirmed
        raise StateDamaged(f"{path}:{number}: not valid JSON ({exc}); {ADVICE}") from None
    return _envelope(path, number, entry)


def _envelope(path: Path, number: int, entry: Any) -> dict[str, Any]:
    """The line's object as :func:`_entry` says, once parsed."""
    if not isinstance(entry, dict):
        raise StateDamaged(f"{path}:{number}: a {type(entry).__name__}, not an object; {ADVICE}")
    g = entry.get("g")
    if not isinstance(g, int) or isinstance(g, bool):
        raise StateDamaged(f"{path}:{number}: no generation number; {ADVICE}")
    if "item" not in entry and "meta" not in entry:
        raise StateDamaged(f"{path}:{number}: neither an item nor meta; {ADVICE}")
    if "meta" in entry and not isinstance(entry["meta"], dict):
        raise StateDamaged(f"{path}:{number}: meta is not an object; {ADVICE}")
    return entry


JOURNAL_BATCH = 1000  # journal lines parsed by one json.loads (each envelope still checked)


def _entries(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """Each journal line's object with its number; None for a torn last line (the end).

    Lines are parsed a batch at a time (C speed: a stopped 100,000-item run leaves up to as
    many lines, read before its resumed run's first poll); a batch that does not parse into
    one value per line is read again line by line, which names its damage."""
    batch: list[tuple[int, bytes, bool]] = []
    for number, line, last in _lines(path):
        batch.append((number, line, last))
        if len(batch) < JOURNAL_BATCH and not last:
            continue
        try:
            parsed = json.loads(b"[" + b",".join(part for _, part, _ in batch) + b"]")
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and len(parsed) == len(batch):
            for (at, _, _), entry in zip(batch, parsed, strict=True):
                yield at, _envelope(path, at, entry)
        else:
            for at, part, end in batch:
                yield at, _entry(path, at, part, end)
        batch = []


@dataclass
class Journal:
    """A journal's lines of one generation, read (:func:`read_journal`) but not yet applied:
    the item of each key's last line, built, and the meta lines merged. ``damage``: what
    stopped the reading or the building (StateDamaged, or the OSError of a journal that cannot
    be read), raised by :meth:`apply`; the snapshot, read in between, reports its own first."""

    path: Path
    generation: int
    items: dict[str, Any] = field(default_factory=dict)  # key -> item, keys in first-line order
    meta: dict[str, Any] = field(default_factory=dict)
    damage: StateDamaged | OSError | None = None

    def apply(self, items: MutableMapping[str, Any], meta: MutableMapping[str, Any]) -> None:
        """Into the snapshot's ``items`` and ``meta``."""
        if self.damage is not None:
            raise self.damage
        meta.update(self.meta)
        items.update(self.items)


def read_journal(path: Path, generation: int, convert: Callable[[Any], Any] | None) -> Journal:
    """The journal's lines of ``generation``; lines of older ones are left (a crash between a
    compaction's rename and its truncation). Any bad line but a torn last one is damage (kept
    in the result: reading never raises). Each item is built (``convert``) once, from its last
    line (a copy's life writes five), once every line is read: the journal's raw lines are not
    kept while the snapshot is read (peak memory)."""
    journal = Journal(path, generation)
    latest: dict[str, tuple[int, Any]] = {}  # item key -> its last line's number and item
    try:
        for number, entry in _entries(path):
            if entry is None:
                break
            if entry["g"] != generation:
                continue
            if "item" in entry:
                value = entry["item"]
                problem = item_problem(value)
                if problem is not None:
                    raise StateDamaged(f"{path}:{number}: {problem}; {ADVICE}")
                row = value["row"]
                key = item_key(row["tenant"], row["image_id"], row["target_region"])
                tag = row.get("line_tag")  # a refused line's own key (``Row.key``)
                latest[key + tag if isinstance(tag, str) else key] = (number, value)
            if "meta" in entry:
                journal.meta.update(entry["meta"])
        built = journal.items
        for key in list(latest):  # in the order the keys first came; each raw line let go
            number, value = latest.pop(key)
            built[key] = checked(f"{path}:{number}", convert)(value)  # no Path per item
    except (StateDamaged, OSError) as exc:
        journal.damage = exc
    return journal


def unbuilt(
    where: Path | str, convert: Callable[[Any], Any] | None, readable: Callable[[Any], bool]
) -> Callable[[Any], None]:
    """For an item that a journal line replaces: not built (None), but damaged, it is the same
    StateDamaged as :func:`checked` gives. ``readable`` says whether ``convert`` builds a value
    without error; when it does not, the item is built to say why."""
    check = checked(where, convert)

    def look(value: Any) -> None:
        if not readable(value):
            check(value)  # raises, as building it would

    return look


def set_aside(state_dir: Path, names: tuple[str, ...]) -> list[Path]:
    """Rename the state's files to ``NAME.damaged-<UTC time>`` (never deleted); return the new
    paths."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = []
    for name in names:
        path = state_dir / name
        if not path.exists():
            continue
        target = state_dir / f"{name}.damaged-{stamp}"
        n = 1
        while target.exists():
            n += 1
            target = state_dir / f"{name}.damaged-{stamp}-{n}"
        os.replace(path, target)
        moved.append(target)
    return moved
