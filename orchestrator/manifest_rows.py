"""One row of the migration list: its cells -> a :class:`Row`, or problems for ``file:line``.

The columns and what each accepts; orchestrator/manifest.py reads the file (CSV or JSON Lines)
and hands each line's cells to :class:`RowChecker`, which reports every problem it sees.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from sys import intern

from orchestrator.config import DEFAULT_CONFIG_NAME, KNOWN_REGIONS, Config
from orchestrator.core.aftercopy import parse_tags
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
    "tags",
)
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

_IMAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PRIORITY = re.compile(r"[+-]?\d{1,9}")
_ONE_WORD = re.compile(r"\S+")


def json_kind(value: object) -> str:
    """How a message names the JSON type of ``value``."""
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


class RowChecker:
    """Turns the cells of one line into a ``Row`` or problems, and remembers item keys."""

    def __init__(self, config: Config, report: Callable[[int, str, str], None]) -> None:
        self.config = config
        self._report_problem = report
        self.problems = 0  # reported so far
        self.first_line: dict[str, int] = {}

    def problem(self, line: int, column: str, message: str) -> None:
        self.problems += 1
        self._report_problem(line, column, message)

    def check(self, line: int, cells: Mapping[str, object]) -> Row | None:
        """The row of these cells (by column name), or None after reporting what is wrong."""
        before = self.problems
        text = {column: self._text(line, column, cells.get(column)) for column in COLUMNS}
        if before != self.problems:
            return None  # a cell of the wrong JSON type: nothing more to say about this line
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
        _, tag_problem = parse_tags(ident["tags"])
        self._report(line, "tags", tag_problem)
        if name is not None:
            self._report(line, "name", name_problem(name))
        if image_id and target:
            key = item_key(tenant, image_id, target)
            self._report(line, "description", description_problem(description, item_token(key)))
            self._check_duplicate(line, key, tenant, image_id, target)
        if before != self.problems:
            return None
        return Row(  # the names many rows share, one string each (100,000 rows: memory)
            line=line,
            tenant=intern(tenant),
            image_id=image_id,
            source_region=intern(source),
            target_region=intern(target),
            name=name,
            description=description,
            project_name=intern(ident["project_name"]),
            source_project_name=intern(ident["source_project_name"]),
            agency_name=ident["agency_name"] or None,
            vault_id=ident["vault_id"] or None,
            priority=priority,
            tags=ident["tags"],
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

    def known(self, line: int, cells: Mapping[str, object]) -> Row:
        """What is known of a rejected line, as a row: its text cells (a cell of another JSON
        type is left empty). A line whose key cannot be formed (no image id, a malformed one,
        no target, or the key of an earlier line) gets a key of its own (``#line<N>``)."""
        text = {c: v if isinstance(v, str) else "" for c, v in cells.items() if c in COLUMNS}
        ident = {column: text.get(column, "").strip() for column in COLUMNS}
        image_id, target = ident["image_id"], ident["target_region"]
        tenant = ident["tenant"] or DEFAULT_TENANT
        whole = bool(_IMAGE_ID.fullmatch(image_id)) and bool(target)
        if whole and self.first_line.get(item_key(tenant, image_id, target), line) != line:
            whole = False
        return Row(
            line=line,
            tenant=tenant,
            image_id=image_id,
            source_region=ident["source_region"],
            target_region=target,
            name=text.get("name") or None,
            description=text.get("description", ""),
            project_name=ident["project_name"],
            source_project_name=ident["source_project_name"],
            agency_name=ident["agency_name"] or None,
            vault_id=ident["vault_id"] or None,
            line_tag="" if whole else f"#line{line}",
        )

    def _text(self, line: int, column: str, value: object) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if column == "priority" and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if column == "priority" and isinstance(value, float) and value.is_integer():
            return str(int(value))  # JSON has one number type: 5.0 is 5
        self.problem(line, column, f"must be a string, not {json_kind(value)}")
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
