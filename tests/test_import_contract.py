"""The pure core imports no I/O: no state, cloud client, CLI, engine, async or network modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import orchestrator

ROOT = Path(orchestrator.__file__).parent
# What the core may use from outside itself: pure shapes, held to the same rules.
ALLOWED_OUTSIDE_CORE = ("orchestrator.config",)
FORBIDDEN = (
    "orchestrator.state",
    "orchestrator.ims",
    "orchestrator.cli",
    "orchestrator.simulator",
    "orchestrator.engine",
    "orchestrator.commands",
    "orchestrator.output",
    "anyio",
    "aiohttp",
    "asyncio",
    "structlog",
    "socket",
    "subprocess",
    "urllib.request",
    "http",
    "shutil",
    "tempfile",
)
CHECKED = [*sorted((ROOT / "core").glob("*.py")), ROOT / "config.py"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str) -> set[str]:
    """Every module (and ``from`` name) ``module`` imports, anywhere in it, made absolute."""
    package = module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def violations(source: str, module: str) -> list[str]:
    out = []
    for name in sorted(imported(source, module)):
        if within(name, FORBIDDEN):
            out.append(f"{name}: an I/O or outer-layer module")
        elif (
            name.startswith("orchestrator.")
            and not within(name, ("orchestrator.core",))
            and not within(name, ALLOWED_OUTSIDE_CORE)
        ):
            out.append(f"{name}: outside the core and not allowed in it")
    return out


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: module_name(p))
def test_the_core_imports_nothing_that_does_io(path: Path) -> None:
    """A core module (or a pure shape it uses) imports no I/O module and no outer layer."""
    assert violations(path.read_text(encoding="utf-8"), module_name(path)) == []


def test_the_contract_sees_imports_inside_functions_and_relative_ones() -> None:
    """An import hidden in a function, or written relative, is found and refused."""
    source = "def f() -> None:\n    import socket\n    from ..engine import window\n"
    assert violations(source, "orchestrator.core.probe") == [
        "orchestrator.engine: an I/O or outer-layer module",
        "orchestrator.engine.window: an I/O or outer-layer module",
        "socket: an I/O or outer-layer module",
    ]
