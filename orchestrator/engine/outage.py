"""A cloud that stops answering ends the run: ``[timing] outage`` (design I7).

Every call a run makes goes to an endpoint (a region's IMS of the tenant's site, or IAM). The
:class:`OutageWatch` hears how each call ended: an answer (even a refusal) shows the endpoint
alive; a failure to reach it (refused, reset, timeout, a 5xx) shows nothing. An endpoint where
no call has succeeded for ``outage`` seconds (counted from its last success, or from the start
of the run) while calls keep failing is down: the scheduler stops submitting to it and stops
following the copies that need it (their state is durable; the next run adopts them), lets
the other tenants finish, and the run exits 75 naming the endpoint and its last error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from orchestrator.config import Config, TenantConfig
from orchestrator.core.cloud import CloudError, ErrorKind, TenantCloud

UNREACHED = frozenset({ErrorKind.NOT_SENT, ErrorKind.TRANSIENT, ErrorKind.UNKNOWN})


def unreached(error: CloudError) -> bool:
    """The call did not show the endpoint alive: no answer at all, or a 5xx."""
    return error.kind in UNREACHED and (error.status is None or error.status >= 500)


@dataclass(frozen=True)
class Outage:
    endpoint: str
    seconds: float  # since the last success (or the start of the run)
    last_error: str

    def __str__(self) -> str:
        return (
            f"{self.endpoint}: no call succeeded for {self.seconds:.0f} s "
            f"(last error: {self.last_error})"
        )


class OutageWatch:
    """What each endpoint's calls showed; which endpoints are down."""

    def __init__(self, outage: float, started: float) -> None:
        self.outage = outage
        self.started = started
        self._last_ok: dict[str, float] = {}
        self._failing: dict[str, str] = {}  # endpoint -> last error, while failing
        self.down: dict[str, Outage] = {}

    def succeeded(self, endpoint: str, now: float) -> None:
        self._last_ok[endpoint] = now
        if self._failing:
            self._failing.pop(endpoint, None)

    def failed(self, endpoint: str, error: CloudError) -> None:
        self._failing[endpoint] = str(error)

    def messages(self) -> dict[str, str]:
        """endpoint -> what happened, for the run's reason."""
        return {e: str(o).removeprefix(f"{e}: ") for e, o in self.down.items()}

    def check(self, now: float) -> list[Outage]:
        """The endpoints found down by this check (each one once)."""
        found = []
        for endpoint, error in self._failing.items():
            since = max(self._last_ok.get(endpoint, self.started), self.started)
            if endpoint not in self.down and now - since >= self.outage:
                self.down[endpoint] = Outage(endpoint, now - since, error)
                found.append(self.down[endpoint])
        return found


def endpoint_of(config: Config, tenant: TenantConfig | None, region: str) -> str:
    """The IMS endpoint a tenant's calls in ``region`` go to."""
    endpoints = tenant.endpoints_in(config) if tenant is not None else config.endpoints
    return endpoints.ims_for(region)


def iam_of(config: Config, tenant: TenantConfig | None) -> str:
    endpoints = tenant.endpoints_in(config) if tenant is not None else config.endpoints
    return endpoints.iam.rstrip("/")


class _Watched:
    """A tenant's cloud whose every call tells the watch how it ended."""

    def __init__(
        self,
        cloud: TenantCloud,
        config: Config,
        tenant: TenantConfig | None,
        watch: OutageWatch,
        now: Callable[[], float],
    ) -> None:
        self._cloud = cloud
        self._config = config
        self._tenant = tenant
        self._watch = watch
        self._now = now

        self._endpoints: dict[tuple[bool, str], str] = {}

    def _endpoint(self, name: str, region: str) -> str:
        iam = name == "probe" and not (self._tenant and self._tenant.project_ids.get(region))
        found = self._endpoints.get((iam, region))
        if found is None:
            if iam:
                found = iam_of(self._config, self._tenant)
            else:
                found = endpoint_of(self._config, self._tenant, region)
            self._endpoints[iam, region] = found
        return found

    def __getattr__(self, name: str) -> Any:
        """The cloud's method ``name``, watched; made once, then found as an attribute."""
        method = cast(Callable[..., Awaitable[Any]], getattr(self._cloud, name))
        watch, now, endpoint_for = self._watch, self._now, self._endpoint
        endpoints: dict[str, str] = {}  # region -> this method's endpoint there
        succeeded = watch.succeeded

        async def call(region: str, *args: Any, **kwargs: Any) -> Any:
            endpoint = endpoints.get(region)
            if endpoint is None:
                endpoint = endpoints[region] = endpoint_for(name, region)
            try:
                result = await method(region, *args, **kwargs)
            except CloudError as error:
                if unreached(error):
                    watch.failed(endpoint, error)
                elif error.kind != ErrorKind.TRANSIENT:  # a 429 says nothing either way
                    succeeded(endpoint, now())
                raise
            succeeded(endpoint, now())
            return result

        setattr(self, name, call)  # the next look-up finds it without __getattr__
        return call


def watched(
    clouds: Mapping[str, TenantCloud], config: Config, watch: OutageWatch, now: Callable[[], float]
) -> dict[str, TenantCloud]:
    """Every tenant's cloud, watched (every TenantCloud method takes the region first)."""
    return {
        name: cast(TenantCloud, _Watched(cloud, config, config.tenant(name), watch, now))
        for name, cloud in clouds.items()
    }
