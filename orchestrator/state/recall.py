"""What a resumed run takes from its checkpoint instead of doing again: the checked list.

Checking a 100,000-row list costs seconds. A run that resumes the very list its state dir last
ran (same bytes, same config, same rules: the same fingerprint, see ``manifest.read_list``)
takes the rows from the checkpoint, where each is stored with its item, and the problems from
the checkpoint's meta. The run (commands/run.py) stores both in one commit, the meta line
last, so a meta that names a fingerprint always comes with the rows it describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from operator import attrgetter

from orchestrator.core.model import Item
from orchestrator.manifest import ListFile, Manifest, Problem
from orchestrator.state.meta import ListMemory, Spot

_LINE = attrgetter("row.line")


def remember(manifest: Manifest) -> ListMemory:
    """The meta value that lets the next run recall ``manifest`` (rows excepted: see above)."""
    return ListMemory(
        fingerprint=manifest.fingerprint,
        problems=tuple((p.line, p.column, p.message) for p in manifest.problems),
        warnings=tuple((p.line, p.column, p.message) for p in manifest.warnings),
    )


def _problems(source: ListFile, spots: tuple[Spot, ...]) -> list[Problem]:
    return [Problem(source.path, line, column, message) for line, column, message in spots]


def recall(
    known: ListMemory | None, source: ListFile, items: Mapping[str, Item]
) -> tuple[Manifest, list[Item]] | None:
    """The list's manifest and the run's items (what ``merge_list`` would give), or None when
    the state dir does not remember this list as it is now (``known``: the meta's memory)."""
    if known is None or known.fingerprint != source.fingerprint:
        return None
    listed: list[Item] = []
    unlisted: list[Item] = []
    for item in items.values():  # (one pass: a resumed 100,000-row list, before its first poll)
        (listed if item.listed else unlisted).append(item)
    listed.sort(key=_LINE)  # in list order already, mostly: one pass too
    manifest = Manifest(
        path=source.path,
        rows=[item.row for item in listed if not item.row.problem],
        rejected=[
            (replace(item.row, problem=""), item.row.problem) for item in listed if item.row.problem
        ],
        problems=_problems(source, known.problems),
        warnings=_problems(source, known.warnings),
        fingerprint=source.fingerprint,
    )
    return manifest, listed + unlisted
