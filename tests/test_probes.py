"""Each tenant's credentials are checked with one probe before anything else is sent for it
(design I5): PROBE_CONCURRENCY probes at a time, the tenants in their order, a refused probe
blocking its tenant only (engine/scheduler.py, ``Engine._probe``)."""

from __future__ import annotations

from typing import Any

from orchestrator.core.cloud import CloudError, ErrorKind, TenantCloud
from orchestrator.core.exits import ExitCode
from orchestrator.core.model import Phase
from orchestrator.engine.scheduler import PROBE_CONCURRENCY
from tests.engine_harness import Scene

TENANTS = [f"t{n:02d}" for n in range(2 * PROBE_CONCURRENCY + 5)]
REFUSED = TENANTS[3]
PROBE_SECONDS = 2.0  # each probe's answer comes this long after it was sent (virtual time)


class Probes:
    """What the probes of all tenants did: the order they started in, and how many were in
    flight at once at most."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.started: list[str] = []
        self.in_flight = 0
        self.most = 0

    def wrap(self, tenant: str, inner: TenantCloud) -> Any:
        probes = self

        class Cloud:
            def __getattr__(self, name: str) -> Any:
                method = getattr(inner, name)
                if name != "probe":
                    return method

                async def probe(region: str) -> str:
                    probes.started.append(tenant)
                    probes.in_flight += 1
                    probes.most = max(probes.most, probes.in_flight)
                    try:
                        await probes.scene.clock.sleep(PROBE_SECONDS)
                        if tenant == REFUSED:
                            raise CloudError(ErrorKind.AUTH, "wrong key", code="APIGW.0301")
                        domain: str = await method(region)
                        return domain
                    finally:
                        probes.in_flight -= 1

                return probe

        return Cloud()


async def test_tenants_are_probed_a_few_at_a_time_in_their_order() -> None:
    scene = Scene()
    for tenant in TENANTS:
        scene.account(tenant)
        scene.row(tenant, 1.0)
    probes = Probes(scene)
    result = await scene.run(wrap=lambda cloud: probes.wrap(cloud.account.name, cloud))
    assert probes.started == sorted(TENANTS)  # each once, in order
    assert probes.most == PROBE_CONCURRENCY
    assert result.exit_code == ExitCode.ATTENTION  # the refused tenant
    phases = {item.row.tenant: item.phase for item in scene.items()}
    assert phases.pop(REFUSED) == Phase.PENDING  # nothing sent for it
    assert set(phases.values()) == {Phase.SUCCEEDED}
    assert scene.truth().duplicates == ()
