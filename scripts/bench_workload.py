"""The benchmark's workloads: simulated clouds (scenarios) and their migration lists.

Every workload is a pure function of its parameters and seed, so the figures of one commit can
be compared with another's. Times are *cloud* seconds (what a copy would take for real) and a
time scale turns them into the simulator's wall seconds.
"""

from __future__ import annotations

import math
import random
import signal
import subprocess
import uuid
from dataclasses import asdict, dataclass, replace
from hashlib import sha256
from pathlib import Path
from typing import Any

from orchestrator.core.units import GIB

REGIONS = ("cn-north-4", "cn-east-3", "cn-south-1", "cn-east-2")  # 300 GiB limit out of each
AGENCY = "ims_admin_agency"


@dataclass(frozen=True)
class Timing:
    """The tool's ``[timing]``: the defaults (for the real cloud), time-scaled."""

    poll_min: float
    poll_max: float
    settle: float
    backoff_max: float
    request_timeout: float
    job_deadline: float

    @classmethod
    def scaled(cls, scale: float) -> Timing:
        return cls(
            poll_min=10.0 * scale,
            poll_max=300.0 * scale,
            settle=21600.0 * scale,
            backoff_max=600.0 * scale,
            request_timeout=30.0,  # a request's own latency is not scaled
            job_deadline=21600.0 * scale,
        )


@dataclass(frozen=True)
class Mixed:
    """The mixed workload: 6 tenants, sizes log-normal around 40 GiB, copies of minutes to
    about an hour and a half (cloud time)."""

    seed: int = 20250401
    images_per_tenant: tuple[int, ...] = (120, 110, 100, 100, 90, 80)
    size_median_gib: float = 40.0
    size_sigma: float = 1.0  # of the log
    size_min_gib: float = 1.0
    size_max_gib: float = 300.0
    fixed_seconds: float = 240.0  # copy time = INIT + (fixed + size x rate) x (1 +- noise)
    seconds_per_gib: float = 12.0
    init_seconds: float = 20.0
    noise: float = 0.2
    time_scale: float = 1 / 200  # wall seconds per cloud second
    baseline_poll_seconds: float = 10.0  # the naive strategy's fixed interval (cloud time)
    requests_per_second: float = 20.0  # per endpoint (cloud time): the tool's default

    @property
    def shortest_copy(self) -> float:
        """Wall seconds of the shortest possible copy (the smallest image, the fastest noise)."""
        run = (self.fixed_seconds + self.size_min_gib * self.seconds_per_gib) * (1 - self.noise)
        return (self.init_seconds + run) * self.time_scale

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["images"] = sum(self.images_per_tenant)
        out["shortest_copy_wall_seconds"] = round(self.shortest_copy, 3)
        return out

    def smaller(self, per_tenant: int) -> Mixed:
        """The same workload with ``per_tenant`` images in each tenant (for a smoke run)."""
        return replace(self, images_per_tenant=(per_tenant,) * len(self.images_per_tenant))

    @property
    def longest_copy(self) -> float:
        """Wall seconds of the longest possible copy (the largest image, the slowest noise)."""
        run = (self.fixed_seconds + self.size_max_gib * self.seconds_per_gib) * (1 + self.noise)
        return (self.init_seconds + run) * self.time_scale


@dataclass(frozen=True)
class Short(Mixed):
    """Short copies: 12 to 80 times ``poll_min`` (10 cloud seconds), each first at 0 % for
    40 cloud seconds (``INIT``), 4 tenants of 80 images (sizes log-normal around 8 GiB)."""

    seed: int = 20250412
    images_per_tenant: tuple[int, ...] = (80, 80, 80, 80)
    size_median_gib: float = 8.0
    size_sigma: float = 0.8
    size_min_gib: float = 1.0
    size_max_gib: float = 30.0
    fixed_seconds: float = 76.0  # runs of (76 + 19 x GiB) x (1 +- 0.15): 80 to 656 s
    seconds_per_gib: float = 19.0
    init_seconds: float = 40.0  # 0 % for 4 x poll_min: a third of the shortest copy
    noise: float = 0.15
    time_scale: float = 1 / 100  # poll_min = 0.1 wall seconds: copies of 1.2 to 8 s

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        poll_min = 10.0 * self.time_scale
        out["copies_in_poll_min"] = [
            round(self.shortest_copy / poll_min, 1),
            round(self.longest_copy / poll_min, 1),
        ]
        return out


@dataclass(frozen=True)
class Scale:
    """Many rows over many tenants, copies that end almost at once: the tool's own costs."""

    seed: int = 7
    rows: int = 100_000
    tenants: int = 1_000
    copy_seconds: float = 0.02  # wall seconds, the same for every copy
    requests_per_second: float = 4000.0
    poll_min: float = 0.05

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Many:
    """Many tenants, copies of a second or two, a cloud that answers at once but throttles
    each access key as the gateway does: the request budget and the unknown outcomes."""

    seed: int = 400
    tenants: int = 400
    per_tenant: int = 50
    copy_seconds: float = 1.5  # wall seconds, 1 to 2 (noise 1/3)
    noise: float = 1 / 3
    key_rate: float = 200.0  # the gateway's per-user limit, per second
    request_timeout: float = 5.0

    @property
    def rows(self) -> int:
        return self.tenants * self.per_tenant

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows}


@dataclass(frozen=True)
class Preflight:
    """One tenant, one source region, one target region, many rows: the listing's requests."""

    seed: int = 11
    rows: int = 10_000

    def describe(self) -> dict[str, Any]:
        return asdict(self)


# -- building scenarios -------------------------------------------------------------------------


@dataclass
class Built:
    """A scenario (for ``ims-migrate simulator``), the list's rows, and the tenants' keys."""

    scenario: dict[str, Any]
    rows: list[dict[str, str]]
    sizes: dict[str, float]  # item key -> GiB


def account(name: str, seed: int) -> dict[str, Any]:
    secret = sha256(f"bench:{seed}:{name}".encode()).hexdigest()
    return {
        "name": name,
        "domain_id": sha256(f"domain:{seed}:{name}".encode()).hexdigest()[:32],
        "access_key": ("BENCH" + secret[:15]).upper(),
        "secret_key": secret[:40],
    }


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _image(rng: random.Random, name: str, gib: float) -> dict[str, Any]:
    size = max(1, int(gib * GIB))
    return {
        "id": _uuid(rng),
        "name": name,
        "__image_size": str(size),
        "min_disk": max(1, math.ceil(size / GIB)),
    }


def build_mixed(work: Mixed) -> Built:
    rng = random.Random(work.seed)
    accounts, images, rows, sizes = [], [], [], {}
    mu = math.log(work.size_median_gib)
    for index, count in enumerate(work.images_per_tenant):
        tenant = f"tenant{index + 1}"
        accounts.append(account(tenant, work.seed))
        for n in range(count):
            gib = min(
                work.size_max_gib, max(work.size_min_gib, rng.lognormvariate(mu, work.size_sigma))
            )
            source = rng.choice(REGIONS)
            target = rng.choice([r for r in REGIONS if r != source])
            image = _image(rng, f"{tenant}-img-{n:04d}", gib)
            images.append({"account": tenant, "region": source, "image": image})
            rows.append(
                {
                    "tenant": tenant,
                    "image_id": image["id"],
                    "source_region": source,
                    "target_region": target,
                }
            )
            sizes[f"{tenant}/{image['id']}/{target}"] = gib
    rng.shuffle(rows)  # the list's order says nothing about sizes or tenants
    scale = work.time_scale
    params = {
        "seconds_per_gib": work.seconds_per_gib * scale,
        "fixed_seconds": work.fixed_seconds * scale,
        "init_seconds": work.init_seconds * scale,
        "noise": work.noise,
        "visibility": "immediate",
        "visibility_lag": 0.0,
        "seed": work.seed,
        "regions": list(REGIONS),
    }
    scenario = {"version": 1, "params": params, "accounts": accounts, "images": images}
    return Built(scenario, rows, sizes)


def build_scale(work: Scale) -> Built:
    rng = random.Random(work.seed)
    accounts = [account(f"s{t:04d}", work.seed) for t in range(work.tenants)]
    images, rows = [], []
    for n in range(work.rows):
        tenant = accounts[n % work.tenants]["name"]
        source = REGIONS[(n // work.tenants) % len(REGIONS)]
        target = REGIONS[(n // work.tenants + 1) % len(REGIONS)]
        image = _image(rng, f"{tenant}-{n:06d}", 1 + n % 7)
        images.append({"account": tenant, "region": source, "image": image})
        rows.append(
            {
                "tenant": tenant,
                "image_id": image["id"],
                "source_region": source,
                "target_region": target,
            }
        )
    params = {
        "seconds_per_gib": 0.0,
        "fixed_seconds": work.copy_seconds,
        "init_seconds": 0.0,
        "noise": 0.0,
        "visibility": "immediate",
        "seed": work.seed,
        "regions": list(REGIONS),
    }
    scenario = {"version": 1, "params": params, "accounts": accounts, "images": images}
    return Built(scenario, rows, {})


def build_many(work: Many) -> Built:
    rng = random.Random(work.seed)
    accounts = [account(f"m{t:04d}", work.seed) for t in range(work.tenants)]
    images, rows = [], []
    for t, acct in enumerate(accounts):
        for n in range(work.per_tenant):
            source = REGIONS[(t + n) % len(REGIONS)]
            target = REGIONS[(t + n + 1) % len(REGIONS)]
            image = _image(rng, f"{acct['name']}-{n:03d}", 1 + n % 7)
            images.append({"account": acct["name"], "region": source, "image": image})
            rows.append(
                {
                    "tenant": acct["name"],
                    "image_id": image["id"],
                    "source_region": source,
                    "target_region": target,
                }
            )
    params = {
        "seconds_per_gib": 0.0,
        "fixed_seconds": work.copy_seconds,
        "init_seconds": 0.0,
        "noise": work.noise,
        "visibility": "immediate",
        "seed": work.seed,
        "regions": list(REGIONS),
        "key_rate": work.key_rate,
    }
    scenario = {"version": 1, "params": params, "accounts": accounts, "images": images}
    return Built(scenario, rows, {})


def build_preflight(work: Preflight) -> Built:
    """10,000 images of one tenant in one region, all to one target whose quota is full: the
    run lists, judges, and stops at the first copy (refused), so the requests are preflight's."""
    rng = random.Random(work.seed)
    source, target = REGIONS[0], REGIONS[1]
    acct = account("solo", work.seed)
    acct["quotas"] = {target: 0}
    images, rows = [], []
    for n in range(work.rows):
        image = _image(rng, f"solo-{n:05d}", 1 + n % 50)
        images.append({"account": "solo", "region": source, "image": image})
        rows.append(
            {
                "tenant": "solo",
                "image_id": image["id"],
                "source_region": source,
                "target_region": target,
            }
        )
    params = {
        "fixed_seconds": 0.02,
        "seconds_per_gib": 0.0,
        "init_seconds": 0.0,
        "noise": 0.0,
        "seed": work.seed,
        "regions": list(REGIONS),
    }
    scenario = {"version": 1, "params": params, "accounts": [acct], "images": images}
    return Built(scenario, rows, {})


def config_toml(
    port: int,
    accounts: list[dict[str, Any]],
    *,
    timing: Timing | None,
    requests_per_second: float,
    order: str = "largest",
    polling: str = "adaptive",
) -> str:
    """The tool's config for a simulator on ``port``: keys from ``BENCH_<N>_AK``-style vars."""
    lines = [
        "[defaults]",
        f'agency_name = "{AGENCY}"',
        "[endpoints]",
        f'ims = "http://127.0.0.1:{port}/ims/{{region}}"',
        f'iam = "http://127.0.0.1:{port}/iam"',
        "[rate]",
        f"requests_per_second = {requests_per_second:g}",
        "[scheduling]",
        f'order = "{order}"',
        f'polling = "{polling}"',
    ]
    if timing is not None:
        lines.append("[timing]")
        lines += [f"{key} = {value:g}" for key, value in asdict(timing).items()]
    for index, acct in enumerate(accounts):
        lines += [
            f"[tenants.{acct['name']}]",
            f'access_key_env = "BENCH_{index}_AK"',
            f'secret_key_env = "BENCH_{index}_SK"',
        ]
    return "\n".join(lines) + "\n"


def credentials_env(accounts: list[dict[str, Any]]) -> dict[str, str]:
    env = {}
    for index, acct in enumerate(accounts):
        env[f"BENCH_{index}_AK"] = acct["access_key"]
        env[f"BENCH_{index}_SK"] = acct["secret_key"]
    return env


def scale_config(port: int, accounts: list[dict[str, Any]], work: Scale) -> str:
    """The tool's config for the scale workload (``scale`` and ``resume``): polls of
    ``work.poll_min`` to 2 s, a minute's request timeout, no early re-submission."""
    timing = Timing(
        poll_min=work.poll_min,
        poll_max=2.0,
        settle=60.0,
        backoff_max=2.0,
        request_timeout=60.0,
        job_deadline=3600.0,
    )
    return config_toml(port, accounts, timing=timing, requests_per_second=work.requests_per_second)


def write_inputs(folder: Path, built: Built, config: str) -> dict[str, str]:
    """The list and the config in ``folder``; the credentials' environment for the tool."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["tenant", "image_id", "source_region", "target_region"]
    with (folder / "migration.csv").open("w", encoding="utf-8") as handle:
        handle.write(",".join(columns) + "\n")
        for row in built.rows:
            handle.write(",".join(row[c] for c in columns) + "\n")
    (folder / "ims-migrate.toml").write_text(config, encoding="utf-8")
    return credentials_env(built.scenario["accounts"])


def run_arguments(folder: Path, *extra: str) -> list[str]:
    """``-m orchestrator run`` on ``folder``'s list and config, no progress display: what
    every bench starts after its interpreter (and its options)."""
    return [
        "-m",
        "orchestrator",
        "run",
        str(folder / "migration.csv"),
        "--config",
        str(folder / "ims-migrate.toml"),
        "--progress",
        "none",
        *extra,
    ]


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM to a bench's server if it still runs, SIGKILL if it is not gone 30 s later."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
