"""The cloud seam at the top: ``run`` and ``plan`` open their tenants' clouds through one factory.

A :class:`CloudFactory` turns the config, the tenants' credentials and the clock into an async
context manager of ``{tenant: TenantCloud}``. The default, :func:`open_clouds`, builds one
transport (a connection pool) per CA bundle and an :class:`~orchestrator.ims.client.ImsClient`
per tenant sharing the rate limits; tests pass the simulator's in-memory clouds instead
(``orchestrator.simulator.inmemory.in_memory_clouds``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from orchestrator.clock import Clock
from orchestrator.commands.common import TenantCredentials
from orchestrator.config import Config
from orchestrator.core.cloud import TenantCloud
from orchestrator.ims.client import ImsClient
from orchestrator.ims.ratelimit import RateLimits
from orchestrator.ims.transport import Transport
from orchestrator.ims.wire import open_transport


class CloudFactory(Protocol):
    def __call__(
        self, config: Config, credentials: TenantCredentials, clock: Clock, /
    ) -> AbstractAsyncContextManager[Mapping[str, TenantCloud]]:
        """The tenants' clouds, open for the duration of the ``async with``."""
        ...


@asynccontextmanager
async def open_clouds(
    config: Config, credentials: TenantCredentials, clock: Clock
) -> AsyncIterator[Mapping[str, TenantCloud]]:
    """One HTTP session per CA bundle (a site of its own may have its own), the request
    budgets (per access key and host), one ``ImsClient`` per tenant."""
    limits = RateLimits(
        config.requests_per_second, clock, host_rate=config.host_requests_per_second
    )
    async with AsyncExitStack() as stack:
        transports: dict[str | None, Transport] = {}
        clients: dict[str, TenantCloud] = {}
        for name, (tenant, creds) in credentials.items():
            bundle = tenant.endpoints_in(config).ca_bundle
            if bundle not in transports:
                transports[bundle] = await stack.enter_async_context(open_transport(config, bundle))
            clients[name] = ImsClient(transports[bundle], tenant, creds, config, limits, clock)
        yield clients


@dataclass(frozen=True)
class Seams:
    """What the CLI hands ``run`` and ``plan``: how to open the clouds, and the clock (None:
    the wall clock)."""

    clouds: CloudFactory = open_clouds
    clock: Clock | None = None
