"""The migration list: CSV or JSON Lines -> valid rows, and every problem at ``file:line``.

A bad row is named, never guessed at (design §2 I6): each problem reads
``file:line: column: what is wrong``, the row is left out, and the other rows go on. What makes
the whole file unusable (unreadable, not UTF-8, empty, no rows, a required column missing from
the header, an unknown suffix) raises :class:`ManifestError` instead.

Line numbers are physical lines of the file: the CSV header is line 1, and a CSV record whose
quoted value spans several lines is numbered by the line it starts on.

The name and description rules of the copy request are the core's
(orchestrator/core/request_text.py): the preflight rules apply the same ones to the copy's final
name and description.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import __version__
from orchestrator.config import DEFAULT_CONFIG_NAME, KNOWN_REGIONS, Config
from orchestrator.core.model import DEFAULT_TENANT, Row, item_key, item_token
from orchestrator.core.request_text import description_problem, name_problem, quoted
from orchestrator.core.suggest import suggest

REQUIRED_COLUMNS = ("image_id", "source_region", "target_region")
OPTIONAL_COLUMNS = (
    "name",
    "description",
    "project_name",
    "source_project_name",
    "agency_name",
    "tenant",
    "vault_id",
    "priority",
)
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
SUFFIXES = (".csv", ".jsonl")
LIST_RULES = 1  # bump when a check below changes what a list gives (see read_list)

_IMAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PRIORITY = re.compile(r"[+-]?\d{1,9}")
_ONE_WORD = re.compile(r"\S+")


class ManifestError(Exception):
    """The list as a whole cannot be used; the message reads ``file: what is wrong``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one row (or, as a warning, something ignored)."""

    path: Path
    line: int
    column: str  # "" when the whole line is concerned
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        if self.column:
            return f"{where}: {self.column}: {self.message}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Manifest:
    """The valid rows of a list, in file order, and what was wrong with the others."""

    path: Path
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    fingerprint: str = ""  # of the list file as read (see read_list)


# --- loading --------------------------------------------------------------------------------


def load_manifest(path: Path, config: Config) -> Manifest:
    """Read and check a migration list (``.csv`` or ``.jsonl``, chosen by suffix)."""
    return parse_list(read_list(path, config), config)


@dataclass(frozen=True)
class ListFile:
    """A list's bytes as read, and the fingerprint of what checking them would give."""

    path: Path
    raw: bytes
    fingerprint: str


def read_list(path: Path, config: Config) -> ListFile:
    """The list's bytes (ManifestError if unreadable or of an unknown format).

    The fingerprint covers everything the checks depend on: the bytes, the tenants and extra
    regions of the config, and the version of these rules. Two lists with the same fingerprint
    give the same rows and problems, which lets a resumed run take them from its checkpoint.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        shown = repr(path.suffix) if path.suffix else "no suffix"
        raise ManifestError(
            f"{path}: unknown list format ({shown}); name the file .csv (with a header row) "
            "or .jsonl (one JSON object per line)"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ManifestError(f"{path}: cannot read the list: {reason}") from exc
    digest = hashlib.sha256()
    context = [__version__, str(LIST_RULES), suffix, str(config.source)]
    context += ["tenants", *sorted(config.tenants), "regions", *sorted(config.extra_regions)]
    digest.update(json.dumps(context).encode())
    digest.update(raw)
    return ListFile(path, raw, digest.hexdigest())


def parse_list(source: ListFile, config: Config) -> Manifest:
    """Check every row of a list read by :func:`read_list`."""
    text = _decode(source.path, source.raw)
    collector = _Collector(source.path, config, source.fingerprint)
    if source.path.suffix.lower() == ".csv":
        _parse_csv(text, collector)
    else:
        _parse_jsonl(text, collector)
    return collector.manifest


def _decode(path: Path, raw: bytes) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError(
            f"{path}: not UTF-8: line {line} has the byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start} of the file (save the list as UTF-8)"
        ) from exc
    if not text.strip():
        raise ManifestError(f"{path}: the list is empty (expected a header row and rows)")
    return text


def _parse_csv(text: str, collector: _Collector) -> None:
    path = collector.path
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    header_line = 0
    previous = 0
    records = 0
    try:
        for record in reader:
            line, previous = previous + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank line, or a spreadsheet's empty ",,,"
            if header is None:
                header, header_line = _check_header(record, line, collector), line
                continue
            records += 1
            if len(record) > len(header):
                collector.problem(
                    line,
                    "",
                    f"has {len(record)} values but the header has {len(header)} columns "
                    "(quote a value that contains a comma)",
                )
                continue
            values = {column: cell for column, cell in zip(header, record, strict=False) if column}
            collector.add(line, values)
    except csv.Error as exc:
        hint = ""
        if "unexpected end of data" in str(exc):
            hint = f" (a quoted value that starts on line {previous + 1} is never closed)"
        raise ManifestError(f"{path}:{previous + 1}: not valid CSV: {exc}{hint}") from exc
    if header is not None and records == 0:
        raise ManifestError(
            f"{path}: the list has a header (line {header_line}) but no rows to migrate"
        )


def _check_header(record: list[str], line: int, collector: _Collector) -> list[str]:
    path = collector.path
    header = [cell.strip().lower() for cell in record]
    seen: set[str] = set()
    for column in header:
        if column and column in seen:
            raise ManifestError(f"{path}:{line}: column {column} appears twice in the header")
        seen.add(column)
    missing = [column for column in REQUIRED_COLUMNS if column not in seen]
    if missing:
        raise ManifestError(
            f"{path}:{line}: the header lacks the required column"
            f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} (the first line must "
            f"name the columns, e.g. {','.join(REQUIRED_COLUMNS)},name)"
        )
    for number, column in enumerate(header, start=1):
        if not column:
            collector.warn(line, "", f"column {number} has no name; its values are ignored")
        elif column not in COLUMNS:
            collector.warn(line, column, _unknown_column(column))
    return [column if column in COLUMNS else "" for column in header]


def _unknown_column(column: str) -> str:
    return (
        f"unknown column, ignored ({suggest(column, COLUMNS)}known columns: {', '.join(COLUMNS)})"
    )


def _parse_jsonl(text: str, collector: _Collector) -> None:
    warned: set[str] = set()
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line_text = raw_line.rstrip("\r")
        if not line_text.strip():
            continue
        try:
            value = json.loads(line_text, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKeyError as exc:
            collector.problem(number, exc.key, "appears twice in this object; keep one")
            continue
        except json.JSONDecodeError as exc:
            collector.problem(number, "", f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(value, dict):
            collector.problem(
                number, "", f'must be a JSON object like {{"image_id": ...}}, not {_kind(value)}'
            )
            continue
        for key in value:
            if key not in COLUMNS and key not in warned:
                warned.add(key)
                collector.warn(number, key, _unknown_column(key))
        collector.add(number, {key: cell for key, cell in value.items() if key in COLUMNS})


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


class _Collector:
    """Turns the cells of one line into a ``Row`` or problems, and remembers item keys."""

    def __init__(self, path: Path, config: Config, fingerprint: str) -> None:
        self.path = path
        self.config = config
        self.manifest = Manifest(path=path, fingerprint=fingerprint)
        self.first_line: dict[str, int] = {}

    def problem(self, line: int, column: str, message: str) -> None:
        self.manifest.problems.append(Problem(self.path, line, column, message))

    def warn(self, line: int, column: str, message: str) -> None:
        self.manifest.warnings.append(Problem(self.path, line, column, message))

    def add(self, line: int, cells: Mapping[str, object]) -> None:
        before = len(self.manifest.problems)
        text = {column: self._text(line, column, cells.get(column)) for column in COLUMNS}
        if before != len(self.manifest.problems):
            return  # a cell of the wrong JSON type: nothing more to say about this line
        # Identifiers are trimmed (", " separators are common); name and description are not,
        # because IMS refuses the spaces a trim would silently remove.
        ident = {column: (text[column] or "").strip() for column in COLUMNS}
        image_id, source, target = (ident[column] for column in REQUIRED_COLUMNS)
        tenant = ident["tenant"] or DEFAULT_TENANT
        name = text["name"] or None
        description = text["description"] or ""
        self._check_identifiers(line, ident)
        self._check_regions(line, source, target)
        self._check_tenant(line, tenant)
        priority = self._priority(line, ident["priority"])
        if name is not None:
            self._report(line, "name", name_problem(name))
        if image_id and target:
            key = item_key(tenant, image_id, target)
            self._report(line, "description", description_problem(description, item_token(key)))
            self._check_duplicate(line, key, tenant, image_id, target)
        if before != len(self.manifest.problems):
            return
        self.manifest.rows.append(
            Row(
                line=line,
                tenant=tenant,
                image_id=image_id,
                source_region=source,
                target_region=target,
                name=name,
                description=description,
                project_name=ident["project_name"],
                source_project_name=ident["source_project_name"],
                agency_name=ident["agency_name"] or None,
                vault_id=ident["vault_id"] or None,
                priority=priority,
            )
        )

    def _report(self, line: int, column: str, trouble: str | None) -> None:
        if trouble:
            self.problem(line, column, trouble)

    def _check_identifiers(self, line: int, ident: Mapping[str, str]) -> None:
        for column in REQUIRED_COLUMNS:
            if not ident[column]:
                self.problem(
                    line, column, f"missing (every row needs {', '.join(REQUIRED_COLUMNS)})"
                )
        image_id = ident["image_id"]
        if image_id and not _IMAGE_ID.fullmatch(image_id):
            self.problem(
                line,
                "image_id",
                f"{quoted(image_id)} is not an image id "
                "(expected e.g. 1f8bbc1e-5a1b-4f43-9a3c-6a9a1d1c2b3e)",
            )
        for column in ("project_name", "source_project_name", "vault_id"):
            if ident[column] and not _ONE_WORD.fullmatch(ident[column]):
                self.problem(line, column, f"{quoted(ident[column])} must be one word")

    def _check_tenant(self, line: int, tenant: str) -> None:
        if self.config.tenant(tenant) is not None:
            return
        section = f"a [tenants.{tenant}] section naming the variables of its keys"
        if self.config.source is None:
            fix = f"no config file was found: create {DEFAULT_CONFIG_NAME} with {section}"
        else:
            fix = f"add {section} to {self.config.source}"
        self.problem(
            line,
            "tenant",
            f"{quoted(tenant)} is not configured (only {DEFAULT_TENANT!r} needs no section); "
            f"{fix} (access_key_env, secret_key_env)",
        )

    def _check_duplicate(
        self, line: int, key: str, tenant: str, image_id: str, target: str
    ) -> None:
        first = self.first_line.setdefault(key, line)
        if first != line:
            self.problem(
                line,
                "image_id",
                f"duplicate of line {first} (same tenant {tenant}, image {image_id} and "
                f"target_region {target}); an image is copied once per tenant and target "
                "region, so remove one of the two rows",
            )

    def _text(self, line: int, column: str, value: object) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if column == "priority" and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        self.problem(line, column, f"must be a string, not {_kind(value)}")
        return None

    def _check_regions(self, line: int, source: str, target: str) -> None:
        for column, region in (("source_region", source), ("target_region", target)):
            if region and not self.config.knows_region(region):
                known = sorted(self.config.extra_regions) + sorted(KNOWN_REGIONS)
                self.problem(
                    line,
                    column,
                    f"unknown region {quoted(region)} ({suggest(region, known)}a private region "
                    "can be added with [regions] extra = [...] in the config)",
                )
        if source and source == target:
            self.problem(
                line,
                "target_region",
                f"same as source_region ({source}); a cross-region copy needs another region",
            )

    def _priority(self, line: int, text: str) -> int:
        if not text:
            return 0
        if not _PRIORITY.fullmatch(text):
            self.problem(
                line,
                "priority",
                f"{quoted(text)} is not a whole number (higher goes first within a tenant; "
                "default 0)",
            )
            return 0
        return int(text)
