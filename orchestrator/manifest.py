"""The migration list: CSV or JSON Lines -> valid rows, and every problem at ``file:line``.

A bad row is named, never guessed at (design §2 I6): each problem reads
``file:line: column: what is wrong``, the row is never submitted (it becomes a ``rejected`` item,
``Manifest.rejected``, so that every data line has a report row), and the other rows go on. What
makes the whole file unusable (unreadable, not UTF-8, empty, no rows, a required column missing
from the header, an unknown suffix) raises :class:`ManifestError` instead, and so does a line
that cannot be parsed in the list's format (a ``.jsonl`` line that is not a JSON object, a
``.csv`` row with more values than the header or an unterminated quote): such a file is
damaged (still being written, say), not a list with a bad row, and none of it is run.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import __version__
from orchestrator.config import Config
from orchestrator.core.model import Row
from orchestrator.core.suggest import suggest
from orchestrator.manifest_rows import COLUMNS, REQUIRED_COLUMNS, RowChecker, json_kind

SUFFIXES = (".csv", ".jsonl")
# Bump when a check here or in manifest_rows.py changes what a list gives (see read_list).
LIST_RULES = 1


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
    # Every line the checks refused, as a row of what is known and the problems' text
    # (``file:line: column: problem``, joined by "; "): it becomes a ``rejected`` item.
    rejected: list[tuple[Row, str]] = field(default_factory=list)
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
                raise ManifestError(
                    f"{path}:{line}: not valid CSV for this header: the row has {len(record)} "
                    f"values but the header has {len(header)} columns (quote a value that "
                    "contains a comma; nothing was run)"
                )
            values = {column: cell for column, cell in zip(header, record, strict=False) if column}
            collector.add(line, values)
    except csv.Error as exc:
        hint = ""
        if "unexpected end of data" in str(exc):
            hint = f" (a quoted value that starts on line {previous + 1} is never closed)"
        raise ManifestError(
            f"{path}:{previous + 1}: not valid CSV: {exc}{hint}; nothing was run"
        ) from exc
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
        twice: list[tuple[str, str]] = []
        try:
            value = json.loads(line_text, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKeyError as exc:
            twice.append((exc.key, "appears twice in this object; keep one"))
            value = json.loads(line_text)
        except json.JSONDecodeError as exc:
            # A damaged file (one still being written, say), not a bad row: run none of it.
            raise ManifestError(
                f"{collector.path}:{number}: not valid JSON: {exc.msg} (column {exc.colno}); "
                "each line must be one JSON object; nothing was run"
            ) from exc
        if not isinstance(value, dict):
            raise ManifestError(
                f"{collector.path}:{number}: must be a JSON object like "
                f'{{"image_id": ...}}, not {json_kind(value)}; nothing was run'
            )
        for key in value:
            if key not in COLUMNS and key not in warned:
                warned.add(key)
                collector.warn(number, key, _unknown_column(key))
        cells = {key: cell for key, cell in value.items() if key in COLUMNS}
        collector.add(number, cells, twice)


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


class _Collector:
    """Gathers a list's rows, problems and warnings; the rows are checked by :class:`RowChecker`."""

    def __init__(self, path: Path, config: Config, fingerprint: str) -> None:
        self.path = path
        self.manifest = Manifest(path=path, fingerprint=fingerprint)
        problems = self.manifest.problems

        def problem(line: int, column: str, message: str) -> None:
            problems.append(Problem(path, line, column, message))

        # Not ``self.problem``: the checker would hold the collector that holds it, a cycle
        # that outlives the list's reading (the run freezes what it loaded out of the
        # collector's sight), and with it a key per row (100,000 rows: 15 MB).
        self.problem = problem
        self.checker = RowChecker(config, problem)

    def warn(self, line: int, column: str, message: str) -> None:
        self.manifest.warnings.append(Problem(self.path, line, column, message))

    def add(
        self, line: int, cells: Mapping[str, object], found: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Check one line's cells; ``found``: (column, problem) pairs seen while reading it."""
        before = len(self.manifest.problems)
        for column, message in found:
            self.problem(line, column, message)
        row = self.checker.check(line, cells)
        if row is not None and len(self.manifest.problems) == before:
            self.manifest.rows.append(row)
            return
        problems = self.manifest.problems[before:]
        detail = "; ".join(str(problem) for problem in problems)
        self.manifest.rejected.append((self.checker.known(line, cells), detail))
