from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs only on asyncio."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _quiet_structlog() -> Iterator[None]:
    """Events are dropped unless a test captures them (structlog.testing.capture_logs)."""

    def drop(*_args: object) -> None:
        raise structlog.DropEvent

    structlog.configure(processors=[drop], cache_logger_on_first_use=False)
    yield
    structlog.reset_defaults()
