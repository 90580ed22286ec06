from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.typing import EventDict, WrappedLogger

from tests.e2e import Cloud
from tests.inprocess import LocalCloud


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
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    """A simulated cloud in its own process, stopped after the test."""
    sim = Cloud(tmp_path)
    yield sim
    sim.stop()


@pytest.fixture
def local_cloud(tmp_path: Path) -> LocalCloud:
    """The same world, list and config, run by ``main(argv)`` in this process on virtual time."""
    return LocalCloud(tmp_path)
