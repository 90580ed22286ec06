"""Configuration: TOML -> frozen dataclasses, validated with messages that say what to fix.

(The loader is being written; the shapes below are the contract the rest of the code uses.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

DEFAULT_AK_ENV = "HUAWEICLOUD_SDK_AK"
DEFAULT_SK_ENV = "HUAWEICLOUD_SDK_SK"
DEFAULT_TOKEN_ENV = "HUAWEICLOUD_SDK_SECURITY_TOKEN"
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


def _frozen(mapping: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class TenantConfig:
    name: str
    access_key_env: str = DEFAULT_AK_ENV
    secret_key_env: str = DEFAULT_SK_ENV
    security_token_env: str = DEFAULT_TOKEN_ENV
    project_ids: Mapping[str, str] = field(default_factory=_frozen)  # project name -> id


@dataclass(frozen=True)
class Endpoints:
    ims: str = "https://ims.{region}.myhuaweicloud.com"
    iam: str = "https://iam.myhuaweicloud.com"
    ca_bundle: str | None = None
    ims_by_region: Mapping[str, str] = field(default_factory=_frozen)

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


@dataclass(frozen=True)
class Config:
    agency_name: str | None = None
    max_concurrent_copies: int = 5
    tenants: Mapping[str, TenantConfig] = field(default_factory=lambda: MappingProxyType({}))
    endpoints: Endpoints = field(default_factory=Endpoints)
    size_limits_gib: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(LARGE_LIMIT_REGIONS, LARGE_LIMIT_GIB))
    )
    default_limit_gib: int = DEFAULT_LIMIT_GIB
    requests_per_second: float = 20.0
    timing: Timing = field(default_factory=Timing)
    retry_fail_codes: tuple[str, ...] = ("IMG.0060", "APIGW.0308")
    extra_regions: tuple[str, ...] = ()
    source: Path | None = None

    def tenant(self, name: str) -> TenantConfig | None:
        """The tenant's config; the ``default`` tenant exists implicitly with the SDK's env names."""
        found = self.tenants.get(name)
        if found is None and name == "default":
            return TenantConfig(name="default")
        return found

    def size_limit_gib(self, region: str) -> int:
        return self.size_limits_gib.get(region, self.default_limit_gib)

    def knows_region(self, region: str) -> bool:
        return region in KNOWN_REGIONS or region in self.extra_regions
