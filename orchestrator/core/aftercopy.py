"""After the copy: what is compared, what is carried, and the words for it. Pure.

A cross-region copy carries the image file, a name and a description; it does not carry the
source's tags nor its ``min_ram``/``max_ram`` (docs/ims-api.md §10). The engine
(orchestrator/engine/aftercopy.py) compares the new image with the source as preflight read it
(``Item.source_facts``), then sets the tags and RAM limits.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orchestrator.core.cloud import FACT_KEYS, Image

VERIFY_OK = "ok"
VERIFY_MISMATCH = "mismatch"
VERIFY_SKIPPED = "skipped"
RAM_KEYS = ("min_ram", "max_ram")
# Besides FACT_KEYS, ``[verify] ignore`` may name these two (what was asked of the copy).
ASKED_KEYS = ("name", "description")
VERIFY_KEYS = FACT_KEYS + ASKED_KEYS
TAG_KEY_MAX = 128  # TMS: keys of 1-128 characters, values of 0-255
TAG_VALUE_MAX = 255
NOTE_SEP = " | "


SOURCE_TAG_KEYS = "_tag_keys"  # in source_facts: the keys of the source's tags, for ``plan``
# In source_facts: the listing showed the source's ``tags`` field, and it was empty. Only then
# is the source known to have no tag (an absent field says nothing; a ``key.value`` string is
# ambiguous when a key holds a dot, so a non-empty list is read again from the tags API).
SOURCE_UNTAGGED = "_untagged"


def facts_text(image: Image) -> str:
    """The source's compared attributes as ``Item.source_facts`` keeps them (JSON text), with
    the keys of its tags as the listing shows them (what ``plan`` says will be carried), or
    the mark that the listing showed it untagged. Images made from one template have the same
    text: one string for all of them (100,000 items keep it for the whole run: memory)."""
    facts = dict(image.facts)
    keys = sorted({tag.partition(".")[0] for tag in image.tags})
    if keys:
        facts[SOURCE_TAG_KEYS] = "\n".join(keys)
    elif image.tags_listed:
        facts[SOURCE_UNTAGGED] = "true"
    return sys.intern(json.dumps(facts, sort_keys=True, separators=(",", ":")))


def untagged(facts: Mapping[str, str]) -> bool:
    """The source had no tag when preflight listed it (its tags need not be read again)."""
    return facts.get(SOURCE_UNTAGGED) == "true" and not facts.get(SOURCE_TAG_KEYS)


def carry_plan(source_facts: str, tags_column: str, *, tags: bool, ram: bool) -> str:
    """What ``plan`` says of an item to copy: what is carried after the copy ("" nothing)."""
    facts = facts_of(source_facts)
    keys = set(facts.get(SOURCE_TAG_KEYS, "").split("\n")) - {""} if tags else set()
    listed, _ = parse_tags(tags_column)
    count = len(keys | listed.keys())
    limits = [key for key in RAM_KEYS if ram and facts.get(key, "0") not in ("", "0")]
    what = carried_text(count, limits)
    return f"after the copy: verified, then carries {what}" if what else ""


def facts_of(text: str) -> dict[str, str]:
    """Inverse of :func:`facts_text`; an empty or damaged text is no facts."""
    try:
        raw = json.loads(text) if text else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def differences(
    source: Mapping[str, str],
    copy: Image,
    *,
    name: str,
    description: str,
    ignore: Iterable[str] = (),
) -> list[str]:
    """What differs between the source (as preflight read it) and its copy, one text each:
    ``min_ram: source 1024, copy 0``. ``checksum`` counts only when both sides have one; the
    name and description are compared with what was asked."""
    skip = frozenset(ignore)
    target = dict(copy.facts)
    out = []
    for key in FACT_KEYS:
        if key in skip:
            continue
        mine, theirs = source.get(key, ""), target.get(key, "")
        if key == "checksum" and not (mine and theirs):
            continue
        if mine != theirs:
            out.append(f"{key}: source {mine or '(none)'}, copy {theirs or '(none)'}")
    if "name" not in skip and copy.name != name:
        out.append(f"name: asked {name!r}, copy {copy.name!r}")
    if "description" not in skip and copy.description != description:
        out.append(f"description: asked {description!r}, copy {copy.description!r}")
    return out


def parse_tags(text: str) -> tuple[dict[str, str], str | None]:
    """The list's ``tags`` cell (``key=value;key=value``) -> (tags, problem or None)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            return {}, f"{part.strip()!r} is not key=value (write key=value;key=value)"
        if len(key) > TAG_KEY_MAX or len(value) > TAG_VALUE_MAX:
            return {}, (
                f"tag {key[:40]!r}: keys have at most {TAG_KEY_MAX} characters, "
                f"values at most {TAG_VALUE_MAX}"
            )
        if key in tags:
            return {}, f"tag {key!r} is given twice"
        tags[key] = value
    return tags, None


def merged_tags(source: Mapping[str, str], listed: Mapping[str, str]) -> dict[str, str]:
    """The tags the copy gets: the source's, then the list's (the list's value wins)."""
    return {**source, **listed}


@dataclass(frozen=True)
class RamChange:
    """``min_ram``/``max_ram`` the copy must get (only those that differ from the source's)."""

    changes: dict[str, int]
    problem: str | None = None  # a source value that is not a number: nothing is patched


def ram_changes(source: Mapping[str, str], copy: Image) -> RamChange:
    """The RAM limits of the source that the copy lacks (docs: PATCH ``replace`` per key)."""
    target = dict(copy.facts)
    changes: dict[str, int] = {}
    for key in RAM_KEYS:
        wanted = source.get(key, "")
        if not wanted or wanted == target.get(key, ""):
            continue
        try:
            changes[key] = int(wanted)
        except ValueError:
            return RamChange({}, f"the source's {key} {wanted!r} is not a number")
    return RamChange(changes)


def carried_text(tags: int, ram: Iterable[str]) -> str:
    """``tags:4,min_ram`` (empty when nothing was carried)."""
    parts = [f"tags:{tags}"] if tags else []
    parts.extend(ram)
    return ",".join(parts)


def shared_note(members: int) -> str:
    """Said on an item whose source image is shared with other projects (not a failure)."""
    return (
        f"source shared with {members} project{'s' if members != 1 else ''}; the copy is not "
        "shared: member project ids differ per region"
    )


def join_notes(*notes: str) -> str:
    """Notes of one item, in order, each once, separated by `` | ``."""
    if not any(notes):  # most items: nothing to say
        return ""
    seen: list[str] = []
    for note in notes:
        for part in note.split(NOTE_SEP) if note else ():
            if part and part not in seen:
                seen.append(part)
    return NOTE_SEP.join(seen)
