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
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from orchestrator.core.exactjson import orjson_exact
from orchestrator.core.model import Phase
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


JOURNAL_BLOCK = 1 << 22  # bytes of the journal read at once (a few MiB: never the whole file)


def _lines(path: Path) -> Iterator[tuple[int, list[bytes], int]]:
    """The journal's lines in runs, without their newlines: each run with the number of its
    first line and, for the file's last run, 1 if its last line ends with a newline and 2 if
    it was cut short (0 for the runs before).

    Read a block at a time and split in C (a stopped 100,000-item run leaves up to as many
    lines, read before its resumed run's first poll): the same lines as iterating the file."""
    number = 1
    with path.open("rb") as handle:
        rest = b""
        while block := handle.read(JOURNAL_BLOCK):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()  # a line that goes on in the next block (or b"")
            if lines:  # and the last whole one: it may be the file's last line
                rest = lines.pop() + b"\n" + rest
            if lines:
                yield number, lines, 0
                number += len(lines)
    if rest:
        lines = rest.split(b"\n")
        torn = lines.pop()
        if torn:
            lines.append(torn)
        yield number, lines, 2 if torn else 1


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


JOURNAL_BATCH = 1000  # journal lines parsed by one call (each envelope still checked)


def _entries(path: Path) -> Iterator[tuple[int, Iterable[Any]]]:
    """The journal's lines' objects a batch at a time, with the number of the batch's first
    line. An object that :func:`_envelope` refuses is given as it is (the reader checks it);
    a torn last line is a None (the end).

    Lines are parsed a batch at a time by ``orjson`` (C speed, about twice json's); a batch
    that it does not parse into one value per line is read again line by line by ``json``
    (the reader the store's format is defined by: it names the damage, in the words it always
    did, and reads what ``orjson`` refuses but ``json`` accepts, ``NaN`` say). A line that
    ``orjson`` would read otherwise (an int beyond 64 bits: core/exactjson.py) is read by
    ``json`` too."""
    for first, lines, end in _lines(path):
        for at in range(0, len(lines), JOURNAL_BATCH):
            batch = lines[at : at + JOURNAL_BATCH]
            number = first + at
            joined = b"[" + b",".join(batch) + b"]"
            try:
                parsed = orjson.loads(joined)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list) and len(parsed) == len(batch):
                if not orjson_exact(joined):  # the lines orjson may read otherwise: by json
                    for offset, line in enumerate(batch):
                        if not orjson_exact(line):
                            parsed[offset] = json.loads(line)
                yield number, parsed
                continue
            final = number + len(batch) - 1 if end and at + JOURNAL_BATCH >= len(lines) else 0
            yield number, _one_by_one(path, number, batch, final, torn=end == 2)


def _one_by_one(
    path: Path, number: int, batch: list[bytes], final: int, *, torn: bool
) -> Iterator[Any]:
    """Each line of a batch read by ``json`` in turn, as the reader asks for it (damage found
    in the order of the lines: an earlier line's bad item first); ``final``: the number of the
    file's last line (a line cut short when ``torn``), if it is in this batch."""
    for offset, line in enumerate(batch):
        last = number + offset == final
        whole = line if last and torn else line + b"\n"  # as the file holds it
        yield _entry(path, number + offset, whole, last)


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


_NOTHING: Any = object()  # a journal line without an item, or without meta


def _parts(path: Path, number: int, entry: Any) -> tuple[Any, Any]:
    """The line's item and meta (``_NOTHING`` when absent), once :func:`_envelope` would let
    it pass (spelled out here: a resume reads up to a line per item before its first poll)."""
    if type(entry) is dict and type(entry.get("g")) is int:
        value, changes = entry.get("item", _NOTHING), entry.get("meta", _NOTHING)
        if (value is not _NOTHING and changes is _NOTHING) or type(changes) is dict:
            return value, changes
    _envelope(path, number, entry)  # raises, naming the damage
    return entry.get("item", _NOTHING), entry["meta"]  # (never: the envelope was refused)


def _item_key(path: Path, number: int, value: Any) -> str:
    """The key of the line's item (``Row.key``), once :func:`item_problem` would let it pass
    (spelled out here for the items that do; it names the damage of the others)."""
    row = value.get("row") if type(value) is dict else None
    if type(row) is dict:
        tenant, image_id = row.get("tenant"), row.get("image_id")
        target, phase = row.get("target_region"), value.get("phase")
        if (
            type(tenant) is not str
            or type(image_id) is not str
            or type(target) is not str
            or type(phase) is not str
            or phase not in _PHASES
        ):
            row = None
    if row is None:
        problem = item_problem(value)
        if problem is not None:
            raise StateDamaged(f"{path}:{number}: {problem}; {ADVICE}")
        row = value["row"]
        tenant, image_id, target = row["tenant"], row["image_id"], row["target_region"]
    key = f"{tenant}/{image_id}/{target}"  # ``item_key``
    tag = row.get("line_tag")  # a refused line's own key
    return key + tag if type(tag) is str else key


def read_journal(path: Path, generation: int, convert: Callable[[Any], Any] | None) -> Journal:
    """The journal's lines of ``generation``; lines of older ones are left (a crash between a
    compaction's rename and its truncation). Any bad line but a torn last one is damage (kept
    in the result: reading never raises). Each item is built (``convert``) once, from its last
    line (a copy's life writes five), once every line is read: the journal's raw lines are not
    kept while the snapshot is read (peak memory)."""
    journal = Journal(path, generation)
    latest: dict[str, tuple[int, Any]] = {}  # item key -> its last line's number and item
    try:
        for first, entries in _entries(path):
            for number, entry in enumerate(entries, first):
                if entry is None:  # torn: the end
                    break
                value, changes = _parts(path, number, entry)
                if entry["g"] != generation:
                    continue
                if value is not _NOTHING:
                    latest[_item_key(path, number, value)] = (number, value)
                if changes is not _NOTHING:
                    journal.meta.update(changes)
            else:
                continue
            break  # after the torn last line
        _build(journal, latest, convert)
    except (StateDamaged, OSError) as exc:
        journal.damage = exc
    return journal


def _build(
    journal: Journal, latest: dict[str, tuple[int, Any]], convert: Callable[[Any], Any] | None
) -> None:
    """Each key's item, from its last line, in the order the keys first came; each raw line
    let go as it is built (memory). Damage names the line."""
    built = journal.items
    for key in list(latest):
        number, value = latest.pop(key)
        if convert is None:
            built[key] = value  # checked as it was read
            continue
        try:
            built[key] = convert(value)
        except (KeyError, TypeError, ValueError, AttributeError):
            checked(f"{journal.path}:{number}", convert)(value)  # raises, naming the line
            raise  # (never: the same call failed just now)


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
