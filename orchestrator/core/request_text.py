"""The copy request's text: the rules IMS applies to an image's name and description.

Pure. The list parser applies them to the columns of a row (orchestrator/manifest.py), the
preflight rules to the copy's final name and description (orchestrator/core/rules.py), and the
lifecycle sends the request built here (``copy_request``).
"""

from __future__ import annotations

import json
import re
import unicodedata

from orchestrator.core.cloud import CopyRequest
from orchestrator.core.model import Item, Row

NAME_MAX = 128  # IMS: 1-128 characters (docs/ims-api.md §4.1)
DESCRIPTION_MAX = 1024  # IMS: at most 1024 characters, including the tool's token suffix
NAME_ALLOWED = "letters, digits, -, ., _, space and Chinese characters"
_NAME_CHAR = re.compile(r"[A-Za-z0-9\-._ \u4e00-\u9fa5]")
_DESCRIPTION_FORBIDDEN = {"<": "<", ">": ">", "\r": "a carriage return", "\n": "a line break"}


def quoted(text: str, limit: int = 40) -> str:
    """``text`` in double quotes for a message, cut to ``limit`` characters with an ellipsis."""
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return "".join(
        f"\\u{ord(c):04x}"
        if unicodedata.category(c) == "Cf"
        else c  # no bidi override on a terminal
        for c in json.dumps(shown, ensure_ascii=False)
    )


def name_problem(name: str) -> str | None:
    """What IMS would refuse in ``name`` as an image name, or None if it is acceptable.

    1 to 128 characters; letters, digits, ``-``, ``.``, ``_``, space and Chinese characters;
    no leading or trailing space (docs/ims-api.md §4.1). The strict reading of the documentation:
    "letters" are ASCII letters and "Chinese" the common ideographs U+4E00-U+9FA5 (the range
    the simulator checks too), so that a name accepted here is one the cloud accepts.
    """
    if not name:
        return "is empty; an image name needs 1 to 128 characters"
    if len(name) > NAME_MAX:
        return f"{quoted(name)} is {len(name)} characters long; IMS allows at most {NAME_MAX}"
    bad = sorted({char for char in name if not _NAME_CHAR.fullmatch(char)})
    if bad:
        listed = ", ".join(json.dumps(char, ensure_ascii=False) for char in bad)
        return (
            f"{quoted(name)} has characters IMS does not accept: {listed} (allowed: {NAME_ALLOWED})"
        )
    if name != name.strip(" "):
        return f"{quoted(name)} starts or ends with a space; IMS does not accept that"
    return None


def copy_suffix(token: str) -> str:
    """What the tool appends to a non-empty description so it can find the copy again."""
    return f" [{token}]"


def describe_copy(row: Row, token: str) -> str:
    """The description actually sent with the copy: the row's, plus the item's token."""
    return f"{row.description}{copy_suffix(token)}" if row.description else f"[{token}]"


def sent_name(item: Item) -> str:
    """The name the item's copy is sent with: the checked one, else the row's, else the id."""
    return item.copy_name or item.row.name or item.row.image_id


def copy_request(item: Item, agency_name: str | None) -> CopyRequest:
    """The copy request of ``item``; ``agency_name`` is the config's, for rows without one."""
    row = item.row
    return CopyRequest(
        name=sent_name(item),
        description=describe_copy(row, item.token),
        region=row.target_region,
        project_name=row.target_project,
        agency_name=row.agency_name or agency_name or "",
        vault_id=row.vault_id,
    )


def description_max(token: str) -> int:
    """How long the user's description may be, once the token suffix is counted."""
    return DESCRIPTION_MAX - len(copy_suffix(token))


def description_problem(description: str, token: str) -> str | None:
    """What IMS would refuse in the description sent (``description`` plus the token suffix)."""
    bad = [label for char, label in _DESCRIPTION_FORBIDDEN.items() if char in description]
    if bad:
        return (
            f"contains {' and '.join(bad)}; IMS does not accept <, > or line breaks in a "
            "description"
        )
    maximum = description_max(token)
    if len(description) > maximum:
        suffix = copy_suffix(token)
        return (
            f"is {len(description)} characters long; at most {maximum} are allowed, because "
            f'ims-migrate appends "{suffix}" ({len(suffix)} characters) to find the copy again '
            f"and IMS accepts {DESCRIPTION_MAX} in all"
        )
    return None
