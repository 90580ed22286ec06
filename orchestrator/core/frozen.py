"""``dataclasses.replace`` for the frozen, slotted dataclasses made for every poll and every
move of every item (``Item``, ``PollState``), at a fifth of its cost.

``dataclasses.replace`` looks the fields up, builds a dict and calls the generated
``__init__``, which sets each field through ``object.__setattr__`` (frozen). The replacer
made here fills the copy as an instance of a class of the same slots that may be written, then
gives it its class (CPython allows it between classes of the same layout; ``state/codec.py``
builds loaded items the same way). Only for classes whose fields are all plain, all taken by
the constructor, with no ``__post_init__``: what ``__init__`` would make, field for field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, TypeVar

T = TypeVar("T")


def replacer(cls: type[T]) -> Callable[..., T]:
    """``replace(obj, **changes)`` for ``cls``: an unknown field is a TypeError all the same."""
    if any(not f.init for f in fields(cls)) or hasattr(cls, "__post_init__"):  # type: ignore[arg-type]
        raise TypeError(f"{cls.__name__}: only plain fields can be replaced this way")
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    scope: dict[str, Any] = {
        "blank": type(f"_{cls.__name__}Copy", (), {"__slots__": cls.__slots__}),  # type: ignore[attr-defined]
        "cls": cls,
        "same": MISSING,
    }
    lines = ["def replace(obj, *, " + ", ".join(f"{name}=same" for name in names) + "):"]
    lines.append("    new = blank()")
    lines += [f"    new.{name} = obj.{name} if {name} is same else {name}" for name in names]
    lines += ["    new.__class__ = cls", "    return new"]
    exec("\n".join(lines), scope)  # noqa: S102 -- our own text, from the class's own fields
    made: Callable[..., T] = scope["replace"]
    return made
