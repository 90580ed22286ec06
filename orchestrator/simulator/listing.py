"""The query filters of ``GET /v2/cloudimages`` as the API documents them, over raw images.

docs/ims-api.md §9: ``name`` is exact; ``tag`` is one user tag as
``key.value`` (ImageInfo's ``tags`` is a list of such strings); ``created_at`` and
``updated_at`` are ``operator:UTC time`` with the operators ``gt gte lt lte eq neq``;
``enterprise_project_id`` is ``0`` (the default project, also for images without one), a
UUID, or ``all_granted_eps`` (every project); every other key compares the attribute's text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

FILTER_KEYS = (
    "__imagetype", "name", "id", "status", "owner", "visibility", "disk_format",
    "virtual_env_type", "__os_type", "__platform", "__whole_image", "architecture",
    "enterprise_project_id", "tag", "created_at", "updated_at",
)  # fmt: skip
TIME_KEYS = frozenset({"created_at", "updated_at"})
DEFAULT_EP = "0"
ALL_EPS = "all_granted_eps"
_OPERATORS: dict[str, Callable[[datetime, datetime], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
}


class FilterError(ValueError):
    """A filter value the API would refuse (400)."""


def _time(text: str) -> datetime:
    value = text.strip().replace("Z", "+00:00")
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def time_filter(value: str) -> tuple[str, datetime]:
    """``gte:2018-10-28T10:00:00Z`` -> ("gte", that time); FilterError when malformed."""
    operator, sep, when = value.partition(":")
    if not sep or operator not in _OPERATORS:
        raise FilterError(f"invalid time filter {value!r}: use operator:time, operators "
                          f"{' '.join(_OPERATORS)}")  # fmt: skip
    try:
        return operator, _time(when)
    except ValueError:
        raise FilterError(f"invalid time in the filter {value!r}") from None


def check_filters(wanted: Mapping[str, str]) -> None:
    """FilterError for a value the API would refuse (a malformed time filter)."""
    for key in TIME_KEYS & wanted.keys():
        time_filter(wanted[key])


def matches(image: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    """Whether the image passes every filter in ``wanted`` (keys of ``FILTER_KEYS``)."""
    for key, value in wanted.items():
        if key in TIME_KEYS:
            operator, when = time_filter(value)
            try:
                moment = _time(str(image.get(key) or ""))
            except ValueError:
                return False
            if not _OPERATORS[operator](moment, when):
                return False
        elif key == "tag":
            if value not in (image.get("tags") or []):
                return False
        elif key == "enterprise_project_id":
            if value != ALL_EPS and str(image.get(key) or DEFAULT_EP) != value:
                return False
        elif str(image.get(key)) != value:
            return False
    return True
