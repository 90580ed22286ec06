"""Configuration as frozen dataclasses, with the defaults; durations; credentials from names.

The file ``ims-migrate.toml`` is read and validated into these shapes by
orchestrator/config_file.py (:func:`~orchestrator.config_file.load_config`); the rest of the
tool only needs the shapes, so it imports this module. Every problem is a :class:`ConfigError`
that says what to fix.

Credentials never live in the file: a tenant names the environment variables that hold them,
and :func:`resolve_credentials` reads those (and never puts a value in a message).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from orchestrator.core.credentials import Credentials
from orchestrator.core.order import Order
from orchestrator.core.polling import Polling

DEFAULT_AK_ENV = "HUAWEICLOUD_SDK_AK"
DEFAULT_SK_ENV = "HUAWEICLOUD_SDK_SK"
DEFAULT_TOKEN_ENV = "HUAWEICLOUD_SDK_SECURITY_TOKEN"  # noqa: S105 - a variable name, not a secret
LARGE_LIMIT_REGIONS = ("cn-south-1", "cn-east-3", "cn-east-2", "cn-north-4")
LARGE_LIMIT_GIB = 300
DEFAULT_LIMIT_GIB = 128

# Region ids IMS serves (huaweicloudsdkims ImsRegion); [regions] extra = [...] adds more.
KNOWN_REGIONS = frozenset(
    {
        "af-south-1", "cn-north-4", "cn-north-1", "cn-east-2", "cn-east-3", "cn-south-1",
        "cn-southwest-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
        "ap-southeast-5", "cn-north-2", "cn-south-2", "cn-north-9", "la-south-2", "sa-brazil-1",
        "la-north-2", "na-mexico-1", "cn-south-4", "tr-west-1", "me-east-1", "ae-ad-1",
        "cn-east-4", "eu-west-101", "cn-east-5", "eu-west-0", "my-kualalumpur-1", "af-north-1",
        "ru-moscow-1", "cn-north-12", "cn-north-11", "cn-southwest-3",
    }
)  # fmt: skip


def frozen_mapping(mapping: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class TenantConfig:
    name: str
    access_key_env: str = DEFAULT_AK_ENV
    secret_key_env: str = DEFAULT_SK_ENV
    security_token_env: str = DEFAULT_TOKEN_ENV
    project_ids: Mapping[str, str] = field(default_factory=frozen_mapping)  # project name -> id
    # The account (IAM domain id) the tenant belongs to, when IAM is not asked: tenants of one
    # account share a window of copies. None and no IAM look-up: a window of its own.
    account: str | None = None
    endpoints: Endpoints | None = None  # [tenants.NAME.endpoints]: another site's; else the run's

    def endpoints_in(self, config: Config) -> Endpoints:
        """The endpoints this tenant's calls go to."""
        return self.endpoints or config.endpoints


@dataclass(frozen=True)
class Endpoints:
    ims: str = "https://ims.{region}.myhuaweicloud.com"
    iam: str = "https://iam.myhuaweicloud.com"
    ca_bundle: str | None = None
    ims_by_region: Mapping[str, str] = field(default_factory=frozen_mapping)

    def ims_for(self, region: str) -> str:
        """Base URL of IMS in ``region`` (no trailing slash)."""
        base = self.ims_by_region.get(region) or self.ims.format(region=region)
        return base.rstrip("/")


@dataclass(frozen=True)
class Timing:
    """Seconds. Defaults suit the real cloud (copies take minutes to hours)."""

    poll_min: float = 10.0
    poll_max: float = 300.0
    settle: float = 21600.0
    backoff_max: float = 600.0
    request_timeout: float = 60.0
    job_deadline: float = 21600.0
    outage: float = 900.0  # no call to an endpoint succeeded for this long: stop, exit 75


SCHEDULING_ORDERS = tuple(order.value for order in Order)
SCHEDULING_POLLING = tuple(polling.value for polling in Polling)


@dataclass(frozen=True)
class Scheduling:
    """How items are ordered and jobs polled. The defaults are the good strategy; the others
    (``order = "list"``: the list's order; ``polling = "fixed"``: every ``poll_min`` seconds,
    nothing learned) exist to measure it against, in benchmarks and rehearsals."""

    order: Order = Order.LARGEST
    polling: Polling = Polling.ADAPTIVE


@dataclass(frozen=True)
class AfterCopy:
    """``[carry] tags, ram`` and ``[verify] ignore``: the steps after a copy (core/aftercopy)."""

    carry_tags: bool = True
    carry_ram: bool = True
    verify_ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    agency_name: str | None = None
    max_concurrent_copies: int = 5
    tenants: Mapping[str, TenantConfig] = field(default_factory=lambda: MappingProxyType({}))
    endpoints: Endpoints = field(default_factory=Endpoints)
    size_limits_gib: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(
            dict.fromkeys(LARGE_LIMIT_REGIONS, LARGE_LIMIT_GIB)
        )
    )
    default_limit_gib: int = DEFAULT_LIMIT_GIB
    # Per access key and host: a quarter of the gateway's documented 200 requests/s per API.
    requests_per_second: float = 50.0
    host_requests_per_second: float | None = None  # a cap per host shared by all keys
    timing: Timing = field(default_factory=Timing)
    scheduling: Scheduling = field(default_factory=Scheduling)
    after: AfterCopy = field(default_factory=AfterCopy)
    retry_fail_codes: tuple[str, ...] = ("IMG.0060", "APIGW.0308")
    extra_regions: tuple[str, ...] = ()
    source: Path | None = None

    def tenant(self, name: str) -> TenantConfig | None:
        """The tenant's config; ``default`` exists implicitly, with the SDK's variable names."""
        found = self.tenants.get(name)
        if found is None and name == "default":
            return TenantConfig(name="default")
        return found

    def size_limit_gib(self, region: str) -> int:
        return self.size_limits_gib.get(region, self.default_limit_gib)

    def knows_region(self, region: str) -> bool:
        return region in KNOWN_REGIONS or region in self.extra_regions


CONFIG_ENV = "IMS_MIGRATE_CONFIG"
DEFAULT_CONFIG_NAME = "ims-migrate.toml"
MAX_CONCURRENT_COPIES = 5  # the cloud's own cap per tenant (docs/ims-api.md §4.2)


class ConfigError(Exception):
    """The configuration (its file, or the credentials it names) cannot be used; says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- durations ------------------------------------------------------------------------------

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(
    rf"(?:(?P<d>{_NUMBER})d)?(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m)?(?:(?P<s>{_NUMBER})s)?"
)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
DURATION_HELP = "use e.g. 90s, 50m, 2h, 1h30m, 1d or plain seconds (3600)"


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``50m``, ``2h``, ``1h30m``, ``1d`` or plain seconds (``3600``, ``2.5``).

    Raises ValueError with a message saying what is accepted.
    """
    cleaned = text.strip().lower()
    if re.fullmatch(_NUMBER, cleaned):
        return float(cleaned)
    match = _DURATION.fullmatch(cleaned)
    if not cleaned or match is None:
        raise ValueError(f"{text!r} is not a duration: {DURATION_HELP}")
    return sum(
        float(value) * _UNIT_SECONDS[unit]
        for unit, value in match.groupdict().items()
        if value is not None
    )


# --- credentials ----------------------------------------------------------------------------


def resolve_credentials(tenant: TenantConfig, environ: Mapping[str, str]) -> Credentials:
    """The tenant's access key pair from the environment variables it names.

    Raises :class:`ConfigError` naming the tenant and the variables to set; a message never
    carries a value.
    """
    access_key = environ.get(tenant.access_key_env, "").strip()
    secret_key = environ.get(tenant.secret_key_env, "").strip()
    missing = [
        name
        for name, value in (
            (tenant.access_key_env, access_key),
            (tenant.secret_key_env, secret_key),
        )
        if not value
    ]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(
            f'tenant "{tenant.name}": {" and ".join(missing)} {verb} not set '
            f"(export the access key in {tenant.access_key_env} and the secret key in "
            f"{tenant.secret_key_env}; a temporary key also needs its token in "
            f"{tenant.security_token_env})"
        )
    token = environ.get(tenant.security_token_env, "").strip() or None
    for name, value, longest in (
        (tenant.access_key_env, access_key, KEY_MAX),
        (tenant.secret_key_env, secret_key, KEY_MAX),
        (tenant.security_token_env, token or "", TOKEN_MAX),
    ):
        problem = _secret_problem(value, longest)
        if problem:  # the value is never shown: it is a secret, or part of one
            raise ConfigError(f'tenant "{tenant.name}": {name} {problem}; export it again')
    return Credentials(access_key=access_key, secret_key=secret_key, security_token=token)


KEY_MAX = 256  # an access or secret key longer than this is not one (real ones: 20 and 40)
TOKEN_MAX = 65536  # a temporary security token: a few KiB


def _secret_problem(value: str, longest: int) -> str | None:
    """What makes ``value`` unusable in an HTTP header, in words that do not show it."""
    if len(value) > longest:
        return f"is {len(value)} characters long (at most {longest})"
    bad = next((i for i, c in enumerate(value) if not " " < c <= "~"), None)
    if bad is not None:
        return f"holds a character that is not printable ASCII (at position {bad + 1})"
    return None
