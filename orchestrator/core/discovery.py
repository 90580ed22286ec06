"""Discovery, pure: which private images of a region become rows of a migration list.

``Filters`` is what the operator asked for (name globs, tags, enterprise project, creation
window, OS type). Only filters the API documents with the same meaning are sent to the
server (``server_query``); every filter is applied again here (``Filters.matches``), as how
the server combines them is UNVERIFIED (docs/ims-api.md §9).

Eligibility is ``run``'s own: ``judge`` builds the row ``run`` would read and asks
``rules.check_source`` and ``rules.source_flags``, so a discovered image is left out for
exactly the reasons the preflight would reject its row. Images that carry this tool's token
(copies it made) are never sources.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase

from orchestrator.config import Config
from orchestrator.core.cloud import Image
from orchestrator.core.model import TOKEN_PREFIX, Row, item_key, item_token
from orchestrator.core.rules import Flag, Rejection, check_source, source_flags

DEFAULT_TENANT = "default"
LIST_COLUMNS = (
    "image_id", "source_region", "target_region", "tenant", "name", "description", "vault_id",
)  # fmt: skip
SKIPPED_COLUMNS = ("tenant", "image_id", "source_region", "target_region", "name", "reason",
                   "message")  # fmt: skip
TOOL_COPY = "made_by_ims_migrate"
TOOL_COPY_MESSAGE = "a copy made by ims-migrate (its description carries the tool's token)"
WHOLE_IMAGE = "whole_image_needs_vault"
OS_TYPES = ("Linux", "Windows")
ALL_EPS = "all_granted_eps"  # every enterprise project the user may see
_SERVER_TIME = "%Y-%m-%dT%H:%M:%SZ"
_GLOB_CHARS = frozenset("*?[")


def parse_time(text: str) -> datetime:
    """ISO 8601 (``2026-01-31``, ``2026-01-31T10:00:00Z``, ``...+08:00``); naive means UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value); the key must not be empty."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{text!r}: a tag is KEY=VALUE (e.g. env=prod)")
    return key.strip(), value.strip()


def image_time(image: Image) -> datetime | None:
    """The image's creation time, or None when the cloud gave none we can read."""
    if not image.created_at:
        return None
    try:
        return parse_time(image.created_at)
    except ValueError:
        return None


@dataclass(frozen=True)
class Filters:
    """The operator's filters; they combine with AND (names: any glob; tags: all of them)."""

    names: tuple[str, ...] = ()
    exclude_names: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    enterprise_project: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    os_type: str | None = None

    def server_query(self) -> dict[str, str]:
        """The documented query keys of ``GET /v2/cloudimages`` that narrow the listing without
        changing what ``matches`` keeps (one ``created_at`` and one ``tag``: whether a key may
        be repeated is UNVERIFIED)."""
        query: dict[str, str] = {}
        if len(self.names) == 1 and not _GLOB_CHARS & set(self.names[0]):
            query["name"] = self.names[0]  # exact name
        if self.tags:
            key, value = self.tags[0]
            query["tag"] = f"{key}.{value}"
        if self.enterprise_project:
            query["enterprise_project_id"] = self.enterprise_project
        if self.os_type:
            query["__os_type"] = self.os_type
        if self.created_after is not None:  # floor to the second: never narrower than asked
            query["created_at"] = "gte:" + self.created_after.strftime(_SERVER_TIME)
        elif self.created_before is not None:  # ceil to the second
            before = self.created_before
            if before.microsecond:
                before = before.replace(microsecond=0) + timedelta(seconds=1)
            query["created_at"] = "lt:" + before.strftime(_SERVER_TIME)
        return query

    def matches(self, image: Image) -> bool:
        if self.names and not any(fnmatchcase(image.name, glob) for glob in self.names):
            return False
        if any(fnmatchcase(image.name, glob) for glob in self.exclude_names):
            return False
        if any(f"{key}.{value}" not in image.tags for key, value in self.tags):
            return False
        project = self.enterprise_project
        if project and project != ALL_EPS and (image.enterprise_project_id or "0") != project:
            return False  # an image without one is in the default project, "0"
        if self.os_type and image.os_type.strip().lower() != self.os_type.lower():
            return False
        if self.created_after is not None or self.created_before is not None:
            moment = image_time(image)
            if moment is None:
                return False
            if self.created_after is not None and moment < self.created_after:
                return False
            if self.created_before is not None and moment >= self.created_before:
                return False
        return True


def is_tool_copy(image: Image) -> bool:
    """A copy this tool made: its description carries an item token."""
    return TOKEN_PREFIX in image.description


@dataclass(frozen=True)
class Finding:
    """One (image, target region): left out (``rejections``) or listed, with ``flags``."""

    row: Row
    image: Image
    rejections: tuple[Rejection, ...] = ()
    flags: tuple[Flag, ...] = ()

    @property
    def reason(self) -> str:
        """The first reason it is left out ("" if eligible)."""
        return self.rejections[0].code if self.rejections else ""


def judge(tenant: str, image: Image, source: str, target: str, config: Config) -> Finding:
    """The preflight's judgement of the row ``run`` would read for this image and target."""
    row = Row(line=0, tenant=tenant, image_id=image.id, source_region=source, target_region=target)
    if is_tool_copy(image):
        return Finding(row, image, (Rejection(TOOL_COPY, TOOL_COPY_MESSAGE),))
    rejections = check_source(row, image, config, token=item_token(row.key))
    return Finding(row, image, tuple(rejections), tuple(source_flags(image)))


def sort_key(found: Finding) -> tuple[str, str, datetime, str, str, str]:
    """Rows sorted stably: tenant, source region, creation time, id (then target region)."""
    row = found.row
    moment = image_time(found.image) or datetime.min.replace(tzinfo=UTC)
    return (row.tenant, row.source_region, moment, found.image.created_at, row.image_id,
            row.target_region)  # fmt: skip


# -- the list file -----------------------------------------------------------------------------


def row_values(row: Row) -> dict[str, str]:
    """A discovered row as ``run`` reads it: name, description and vault_id empty (defaults)."""
    values = dict.fromkeys(LIST_COLUMNS, "")
    values.update(
        image_id=row.image_id,
        source_region=row.source_region,
        target_region=row.target_region,
        tenant=row.tenant,
    )
    return values


def render_rows(
    rows: Sequence[Row], fmt: str, *, header: Sequence[str] | None, newline: str = "\n"
) -> str:
    """CSV lines under ``header`` (written first when ``header`` is None: a new file) or JSON
    Lines (the four key columns)."""
    if fmt == "jsonl":
        keys = ("image_id", "source_region", "target_region", "tenant")
        return "".join(json.dumps({k: row_values(row)[k] for k in keys}) + newline for row in rows)
    buffer = io.StringIO()
    columns = list(header) if header is not None else list(LIST_COLUMNS)
    writer = csv.writer(buffer, lineterminator=newline)
    if header is None:
        writer.writerow(columns)
    for row in rows:
        values = row_values(row)
        missing = [c for c, v in values.items() if v and c not in columns]
        if missing:
            raise ValueError(f"the list's header has no column {', '.join(missing)}")
        writer.writerow([values.get(column, "") for column in columns])
    return buffer.getvalue()


@dataclass(frozen=True)
class ExistingList:
    """The keys an existing list already holds, its CSV header and line ending."""

    keys: frozenset[str]
    header: tuple[str, ...] | None  # None for JSON Lines or an empty file
    newline: str = "\n"


def read_existing(text: str, fmt: str) -> ExistingList:
    """Every (tenant, image_id, target_region) key in a list's text, valid row or not: a row
    added with the key of a bad one would be rejected as a duplicate."""
    newline = "\r\n" if "\r\n" in text else "\n"
    text = text.removeprefix("\ufeff")
    records: Iterable[Mapping[str, object]]
    header: tuple[str, ...] | None = None
    if fmt == "jsonl":
        records = [r for r in (_json_object(line) for line in text.splitlines()) if r is not None]
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
        lines = [record for record in reader if any(cell.strip() for cell in record)]
        if lines:
            header = tuple(cell.strip().lower() for cell in lines[0])
        records = [dict(zip(header or (), record, strict=False)) for record in lines[1:]]
    keys = set()
    for record in records:
        tenant = str(record.get("tenant") or "").strip() or DEFAULT_TENANT
        image_id = str(record.get("image_id") or "").strip()
        target = str(record.get("target_region") or "").strip()
        keys.add(item_key(tenant, image_id, target))
    return ExistingList(frozenset(keys), header, newline)


def _json_object(line: str) -> Mapping[str, object] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def render_skipped(left_out: Sequence[Finding]) -> str:
    """The ``--skipped`` CSV: what was left out, with every reason."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SKIPPED_COLUMNS)
    for found in left_out:
        row = found.row
        writer.writerow([
            row.tenant, row.image_id, row.source_region, row.target_region, found.image.name,
            ",".join(r.code for r in found.rejections),
            "; ".join(r.message for r in found.rejections),
        ])  # fmt: skip
    return buffer.getvalue()
