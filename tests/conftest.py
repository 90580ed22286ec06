import signal
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import structlog
from structlog.typing import EventDict, WrappedLogger

from orchestrator.simulator.harness import Cloud
from tests.e2e import starts_process
from tests.inprocess import LocalCloud

# Which tests start ims-migrate (the CLI or the simulator) as a process: those using a fixture
# tagged starts_process, and those that spawn ``python -m orchestrator...`` themselves (seen
# by an audit hook). Exactly these are marked e2e; a test whose mark disagrees fails.
_SPAWNED: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "subprocess.Popen" and isinstance(args[1], list | tuple):
        argv = [str(a) for a in args[1]]
        if any(a == "-m" and b.split(".")[0] == "orchestrator" for a, b in pairwise(argv)):
            _SPAWNED.append(" ".join(argv))


sys.addaudithook(_audit)


def _uses_process_fixture(item: pytest.Item) -> bool:
    # The fixture each name resolves to for this test is the last of its definitions
    # (a module may define its own ``cloud``). ``_fixtureinfo`` is pytest's, read-only here.
    if not isinstance(item, pytest.Function):
        return False
    defs = item._fixtureinfo.name2fixturedefs.values()
    return any(getattr(d[-1].func, "starts_process", False) for d in defs if d)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fail the collection at once when a test uses a process fixture but is not marked e2e."""
    wrong = [
        item.nodeid
        for item in items
        if _uses_process_fixture(item) and item.get_closest_marker("e2e") is None
    ]
    if wrong:
        raise pytest.UsageError("start a process but are not marked e2e: " + ", ".join(wrong))


@pytest.fixture(autouse=True)
def _e2e_mark_is_true(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked e2e starts ims-migrate as a process, and a test that does is marked e2e."""
    _SPAWNED.clear()
    yield
    marked = request.node.get_closest_marker("e2e") is not None
    started = bool(_SPAWNED) or _uses_process_fixture(request.node)
    if marked and not started:
        pytest.fail("marked e2e but started no ims-migrate process", pytrace=False)
    if started and not marked:
        pytest.fail(f"started {_SPAWNED[0]!r} but is not marked e2e", pytrace=False)


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs only on asyncio."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    """Events are dropped unless a test captures them (structlog.testing.capture_logs)."""

    def drop(_logger: WrappedLogger, _method: str, _event: EventDict) -> EventDict:
        raise structlog.DropEvent

    # In place, as logs.configure does: a logger cached by an earlier test (the CLI caches
    # them) keeps this list, and must still hear this test's processors.
    processors = structlog.get_config()["processors"]
    before = list(processors)
    processors[:] = [drop]
    structlog.configure(processors=processors)
    yield
    processors[:] = before


@pytest.fixture
@starts_process
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    """A simulated cloud in its own process, stopped after the test."""
    sim = Cloud(tmp_path)
    yield sim
    sim.stop()


@pytest.fixture
def local_cloud(tmp_path: Path) -> LocalCloud:
    """The same world, list and config, run by ``main(argv)`` in this process on virtual time."""
    return LocalCloud(tmp_path)


@pytest.fixture
def caught() -> Iterator[list[int]]:
    """A fallback handler, so that a run that does not handle the signal cannot kill pytest."""
    heard: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        heard.append(signum)

    old = signal.signal(signal.SIGTERM, handler)
    yield heard
    signal.signal(signal.SIGTERM, old)
