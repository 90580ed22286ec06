"""How the simulated world behaves, and the cloud's documented limits as the simulator knows them.

The limits are the simulator's own copy of the IMS documentation (docs/ims-api.md §4.2), not
the product's: the simulator is the oracle the product is judged by, so it must not take the
numbers it checks from the code under test. tests/test_simulator_world.py checks that the
product's defaults (orchestrator/config.py) agree with these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# Images copied across regions from these regions may be up to 300 GiB; elsewhere 128 GiB
# ("华南-广州、华东-上海一、华东-上海二和华北-北京四用于跨区域复制的镜像不能超过300GiB").
LARGE_LIMIT_REGIONS = ("cn-south-1", "cn-east-3", "cn-east-2", "cn-north-4")
LARGE_LIMIT_GIB = 300
DEFAULT_LIMIT_GIB = 128

# Region ids IMS serves (huaweicloudsdkims ImsRegion).
REGIONS = (
    "af-north-1", "af-south-1", "ae-ad-1", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3",
    "ap-southeast-4", "ap-southeast-5", "cn-east-2", "cn-east-3", "cn-east-4", "cn-east-5",
    "cn-north-1", "cn-north-11", "cn-north-12", "cn-north-2", "cn-north-4", "cn-north-9",
    "cn-south-1", "cn-south-2", "cn-south-4", "cn-southwest-2", "cn-southwest-3", "eu-west-0",
    "eu-west-101", "la-north-2", "la-south-2", "me-east-1", "my-kualalumpur-1", "na-mexico-1",
    "ru-moscow-1", "sa-brazil-1", "tr-west-1",
)  # fmt: skip

IMMEDIATE, AT_END = "immediate", "at_end"


def default_size_limits() -> dict[str, int]:
    return dict.fromkeys(LARGE_LIMIT_REGIONS, LARGE_LIMIT_GIB)


@dataclass(frozen=True)
class WorldParams:
    """How the world behaves. Durations are real seconds of (already accelerated) time."""

    seconds_per_gib: float = 0.05
    fixed_seconds: float = 0.5
    init_seconds: float = 0.2
    noise: float = 0.1  # each duration is multiplied by 1 ± noise (seeded per copy)
    fail_rate: float = 0.0  # fraction of accepted copies whose job ends in FAIL
    fail_code: str = "IMG.0500"
    fail_reason: str = "Failed to replicate the image: internal error."
    leave_killed: bool = False  # a failed job's copy stays in the target as ``killed``
    cap: int = 5  # copies in INIT/RUNNING per account; the next one gets IMG.0060
    visibility: str = IMMEDIATE  # when the copy shows in the target listing: immediate|at_end
    visibility_lag: float = 0.0  # seconds added to either
    seed: int = 0
    default_quota: int = 1000  # private images per project
    reject_name_conflicts: bool = False  # IMG.0009 when the name exists in the target
    regions: tuple[str, ...] = tuple(sorted(REGIONS))
    size_limits_gib: Mapping[str, int] = field(default_factory=default_size_limits)
    default_limit_gib: int = DEFAULT_LIMIT_GIB
    lock_after: int = 5  # consecutive bad signatures that lock an AK ...
    lock_seconds: float = 300.0  # ... for this long
    max_skew: float = 900.0  # allowed |X-Sdk-Date - now|
    key_rate: float = 0.0  # requests/s per access key and host before 429 APIGW.0308 (0: none)

    def __post_init__(self) -> None:
        if self.visibility not in (IMMEDIATE, AT_END):
            raise ValueError(f"visibility must be {IMMEDIATE!r} or {AT_END!r}")
        if self.cap < 1 or not 0.0 <= self.fail_rate <= 1.0 or not 0.0 <= self.noise < 1.0:
            raise ValueError("cap must be >= 1, fail_rate in 0..1 and noise in 0..1")

    def size_limit_gib(self, region: str) -> int:
        return self.size_limits_gib.get(region, self.default_limit_gib)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["regions"] = list(self.regions)
        out["size_limits_gib"] = dict(self.size_limits_gib)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> WorldParams:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown world parameters: {', '.join(sorted(unknown))}")
        values = dict(raw)
        if "regions" in values:
            values["regions"] = tuple(values["regions"])
        if "size_limits_gib" in values:
            values["size_limits_gib"] = dict(values["size_limits_gib"])
        return cls(**values)
