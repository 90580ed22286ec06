"""One TOML table of the config file being read: typed getters whose errors name the place.

Every problem is a :class:`~orchestrator.config.ConfigError` reading
``file: [section] key: what is wrong (what to do)``; orchestrator/config_file.py builds the
:class:`~orchestrator.config.Config` from these tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orchestrator.config import ConfigError, parse_duration
from orchestrator.core.suggest import suggest


class Table:
    """One TOML table being read, for messages ``file: [section] key: ...``."""

    def __init__(self, shown: str, section: str, data: Mapping[str, Any]) -> None:
        self.shown = shown
        self.section = section
        self.data = data

    def error(self, key: str | None, what: str) -> ConfigError:
        where = f"[{self.section}] {key}" if key else f"[{self.section}]"
        return ConfigError(f"{self.shown}: {where}: {what}")

    def only(self, known: Iterable[str], what: str = "key") -> None:
        known = list(known)
        for key in self.data:
            if key not in known:
                hint = suggest(key, known)
                raise self.error(
                    key, f"unknown {what} ({hint}known {what}s: {', '.join(known) or 'none'})"
                )

    def sub(self, key: str, section: str) -> Table:
        value = self.data.get(key, {})
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a table (write it as a [{section}] section)")
        return Table(self.shown, section, value)

    def text(self, key: str, check: Callable[[str], str | None] | None = None) -> str | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, str):
            raise self.error(key, f"must be a string in quotes, not {toml_kind(value)}")
        if not value.strip():
            raise self.error(key, "is empty (give a value or remove the line)")
        problem = check(value) if check else None
        if problem:
            raise self.error(key, problem)
        return value.strip()

    def integer(self, key: str, low: int, high: int | None = None) -> int | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be a whole number, not {toml_kind(value)}")
        number: int = value
        if number < low or (high is not None and number > high):
            allowed = f"{low}..{high}" if high is not None else f"at least {low}"
            raise self.error(key, f"{number} is out of range (allowed: {allowed})")
        return number

    def positive(self, key: str, *, duration: bool = False) -> float | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if duration and isinstance(value, str):
            try:
                number = parse_duration(value)
            except ValueError as exc:
                raise self.error(key, str(exc)) from exc
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            kinds = "a number of seconds or a duration string" if duration else "a number"
            raise self.error(key, f"must be {kinds}, not {toml_kind(value)}")
        if not math.isfinite(number):
            raise self.error(key, f"{value!r} must be a finite number")
        if number <= 0:
            raise self.error(key, f"{value!r} must be more than zero")
        return number

    def boolean(self, key: str) -> bool | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {toml_kind(value)}")
        return value

    def strings(self, key: str, check: Callable[[str], str | None]) -> tuple[str, ...] | None:
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, list):
            raise self.error(
                key, f'must be a list of strings, e.g. ["a", "b"], not {toml_kind(value)}'
            )
        out: list[str] = []
        for element in value:
            if not isinstance(element, str):
                raise self.error(key, f"every element must be a string, not {toml_kind(element)}")
            problem = check(element)
            if problem:
                raise self.error(key, problem)
            if element not in out:
                out.append(element)
        return tuple(out)


def toml_kind(value: object) -> str:
    """How a message names the TOML type of ``value``."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return f"a {type(value).__name__}"
