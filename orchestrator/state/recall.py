"""What a resumed run takes from its checkpoint instead of doing again: the checked list.

Checking a 100,000-row list costs seconds. A run that resumes the very list its state dir last
ran (same bytes, same config, same rules: the same fingerprint, see ``manifest.read_list``)
takes the rows from the checkpoint, where each is stored with its item, and the problems from
the checkpoint's meta. The runner stores both in one commit, the meta line last, so a meta
that names a fingerprint always comes with the rows it describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.core.model import Item
from orchestrator.manifest import ListFile, Manifest, Problem

LIST_META = "list"


def remember(manifest: Manifest) -> dict[str, Any]:
    """The meta value that lets the next run recall ``manifest`` (rows excepted: see above)."""
    return {
        "fingerprint": manifest.fingerprint,
        "problems": [[p.line, p.column, p.message] for p in manifest.problems],
        "warnings": [[p.line, p.column, p.message] for p in manifest.warnings],
    }


def _problems(source: ListFile, stored: object) -> list[Problem] | None:
    if not isinstance(stored, list):
        return None
    out = []
    for entry in stored:
        if not (isinstance(entry, list) and len(entry) == 3):
            return None
        line, column, message = entry
        out.append(Problem(source.path, int(line), str(column), str(message)))
    return out


def recall(
    meta: Mapping[str, Any], source: ListFile, items: Mapping[str, Item]
) -> tuple[Manifest, list[Item]] | None:
    """The list's manifest and the run's items (what ``merge_list`` would give), or None when
    the state dir does not remember this list as it is now."""
    known = meta.get(LIST_META)
    if not isinstance(known, dict) or known.get("fingerprint") != source.fingerprint:
        return None
    problems = _problems(source, known.get("problems"))
    warnings = _problems(source, known.get("warnings"))
    if problems is None or warnings is None:
        return None
    listed = sorted((item for item in items.values() if item.listed), key=lambda i: i.row.line)
    unlisted = [item for item in items.values() if not item.listed]
    manifest = Manifest(
        path=source.path,
        rows=[item.row for item in listed],
        problems=problems,
        warnings=warnings,
        fingerprint=source.fingerprint,
    )
    return manifest, listed + unlisted
