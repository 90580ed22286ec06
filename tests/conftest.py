from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.typing import EventDict, WrappedLogger

from orchestrator.simulator.harness import Cloud
from tests.e2e import starts_process
from tests.inprocess import LocalCloud


def _starts_process(item: pytest.Function) -> bool:
    # The fixture each name resolves to for this test is the last of its definitions
    # (a module may define its own ``cloud``). ``_fixtureinfo`` is pytest's, read-only here.
    defs = item._fixtureinfo.name2fixturedefs.values()
    return any(getattr(d[-1].func, "starts_process", False) for d in defs if d)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fail the collection when a test's e2e mark and its process fixtures disagree."""
    wrong = [
        item.nodeid
        for item in items
        if isinstance(item, pytest.Function)
        and (item.get_closest_marker("e2e") is not None) != _starts_process(item)
    ]
    if wrong:
        raise pytest.UsageError(
            "marked e2e but starts no process, or the reverse: " + ", ".join(wrong)
        )


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs only on asyncio."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    """Events are dropped unless a test captures them (structlog.testing.capture_logs)."""

    def drop(_logger: WrappedLogger, _method: str, _event: EventDict) -> EventDict:
        raise structlog.DropEvent

    structlog.configure(processors=[drop], cache_logger_on_first_use=False)
    yield
    structlog.reset_defaults()


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
