"""Run the engine on virtual time against the in-memory fake cloud (the simulator's world)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from orchestrator.config import Config, Timing
from orchestrator.core.cloud import TenantCloud
from orchestrator.core.model import Item, Row
from orchestrator.core.outcome import merge_list
from orchestrator.core.units import GIB
from orchestrator.engine.context import RunContext
from orchestrator.engine.scheduler import Engine, RunOptions, RunResult, store_merged
from orchestrator.simulator.faults import FaultPlan
from orchestrator.simulator.inmemory import InMemoryTenantCloud
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.truth import Truth
from orchestrator.simulator.world import World
from orchestrator.state.store import InMemoryStore
from tests.virtual_clock import VirtualClock

TIMING = Timing(
    poll_min=5.0,
    poll_max=300.0,
    settle=900.0,
    backoff_max=120.0,
    request_timeout=30.0,
    job_deadline=6 * 3600.0,
)
CONFIG = Config(agency_name="ims_admin_agency", timing=TIMING)
SOURCE = "cn-north-4"
TARGET = "cn-east-3"


@dataclass
class Scene:
    """A world, its accounts' images, and the rows of a list."""

    clock: VirtualClock = field(default_factory=VirtualClock)
    world: World = field(
        default_factory=lambda: World(
            WorldParams(seconds_per_gib=20.0, fixed_seconds=120.0, init_seconds=30.0, noise=0.2)
        )
    )
    rows: list[Row] = field(default_factory=list)
    tenant_account: dict[str, str] = field(default_factory=dict)
    store: InMemoryStore = field(default_factory=InMemoryStore)
    faults: FaultPlan | None = None

    def account(self, name: str, domain: str | None = None) -> None:
        self.world.add_account(name, domain or f"dom-{name}", f"AK{name}", f"SK{name}")
        self.tenant_account[name] = name

    def tenant(self, tenant: str, account: str) -> None:
        """A config tenant whose credentials belong to ``account``."""
        self.tenant_account[tenant] = account

    def image(self, tenant: str, gib: float, **attrs: Any) -> str:
        account = self.tenant_account[tenant]
        image = self.world.add_image(
            account,
            SOURCE,
            {"name": f"img-{len(self.rows)}", "__image_size": str(int(gib * GIB)), **attrs},
        )
        return str(image["id"])

    def row(self, tenant: str, gib: float, *, target: str = TARGET, **attrs: Any) -> Row:
        image_id = self.image(tenant, gib, **attrs)
        row = Row(
            line=len(self.rows) + 2,
            tenant=tenant,
            image_id=image_id,
            source_region=SOURCE,
            target_region=target,
        )
        self.rows.append(row)
        return row

    def clouds(self) -> dict[str, InMemoryTenantCloud]:
        return {
            tenant: InMemoryTenantCloud(self.world, account, self.clock.now, self.faults)
            for tenant, account in self.tenant_account.items()
        }

    def context(
        self,
        config: Config = CONFIG,
        *,
        wrap: Callable[[InMemoryTenantCloud], TenantCloud] | None = None,
        **extra: Any,
    ) -> RunContext:
        """The run's context; ``wrap``: each tenant's cloud as the run sees it (a recorder)."""
        own = self.clouds()
        clouds: Mapping[str, TenantCloud] = own
        if wrap is not None:
            clouds = {tenant: wrap(cloud) for tenant, cloud in own.items()}
        return RunContext(
            config=config,
            clock=self.clock,
            store=self.store,
            clouds=clouds,
            rng=random.Random(1),
            **extra,
        )

    async def run(
        self,
        config: Config = CONFIG,
        options: RunOptions | None = None,
        rows: Sequence[Row] | None = None,
        wrap: Callable[[InMemoryTenantCloud], TenantCloud] | None = None,
        **extra: Any,
    ) -> RunResult:
        ctx = self.context(config, wrap=wrap, **extra)
        items = merge_list(self.store.items, list(rows if rows is not None else self.rows))
        result: RunResult | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(self.clock.autojump)
            await store_merged(self.store, items)
            result = await Engine(ctx, options or RunOptions()).run(items)
            group.cancel_scope.cancel()
        assert result is not None
        self.last_ctx = ctx
        return result

    def truth(self) -> Truth:
        return self.world.truth(self.clock.now())

    def states(self) -> Mapping[str, str]:
        return {key: item.phase.value for key, item in self.store.items.items()}

    def items(self) -> list[Item]:
        return list(self.store.items.values())
