"""Scenarios: a JSON-able description of a simulated cloud, and the demo's generator.

Shape (every key but ``accounts`` optional)::

    {"version": 1,
     "params": {"seconds_per_gib": 0.05, "fixed_seconds": 0.5, "init_seconds": 0.2, "noise": 0.1,
                "fail_rate": 0, "cap": 5, "visibility": "immediate", "visibility_lag": 0,
                "seed": 0, "regions": ["cn-north-4", ...], ...},        # see WorldParams
     "accounts": [{"name": "alpha", "domain_id": "<32 hex>", "access_key": "...",
                   "secret_key": "...", "security_token": null,
                   "project_ids": {"cn-north-4": "<32 hex>"},             # default projects
                   "sub_projects": [{"region": "cn-north-4", "name": "cn-north-4_dev",
                                     "id": "<32 hex>"}],
                   "quotas": {"cn-east-3": 50}, "agencies": ["ims_admin_agency"]}],
     "images": [{"account": "alpha", "region": "cn-north-4", "project": null,
                 "image": {"id": "<uuid>", "name": "web", "__image_size": "1073741824", ...}}],
     "faults": null}                                                     # see FaultPlan

``ak``/``sk`` are accepted as short names of ``access_key``/``secret_key``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import uuid
from collections.abc import Mapping, Sequence
from hashlib import sha256
from pathlib import Path
from typing import Any

from orchestrator.core.units import GIB
from orchestrator.simulator.faults import FaultPlan
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.world import World
from orchestrator.state.atomic import write_atomic

SCENARIO_VERSION = 1
DEMO_REGIONS = ("cn-north-4", "cn-east-3", "cn-south-1", "ap-southeast-1")
DEMO_ACCOUNTS = ("alpha", "beta", "gamma")
DEMO_COLUMNS = (
    "tenant", "image_id", "source_region", "target_region", "name", "description", "priority",
)  # fmt: skip
DEMO_GOOD_PER_ACCOUNT = 20


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message says where and why."""


def _field(raw: Mapping[str, Any], where: str, *names: str) -> str:
    for name in names:
        value = raw.get(name)
        if isinstance(value, str) and value:
            return value
    raise ScenarioError(f"{where}: {names[0]!r} is required (a non-empty string)")


def build_world(scenario: Mapping[str, Any]) -> tuple[World, FaultPlan | None]:
    """The world (and fault plan, if any) a scenario describes."""
    if not isinstance(scenario, Mapping):
        raise ScenarioError("a scenario is a JSON object")
    version = scenario.get("version", SCENARIO_VERSION)
    if version != SCENARIO_VERSION:
        raise ScenarioError(f"scenario version {version!r} is not supported")
    try:
        world = World(WorldParams.from_json(scenario.get("params") or {}))
    except (TypeError, ValueError) as error:
        raise ScenarioError(f"params: {error}") from None
    accounts = scenario.get("accounts")
    if not isinstance(accounts, Sequence) or not accounts:
        raise ScenarioError("accounts: at least one account is required")
    for index, raw in enumerate(accounts):
        _add_account(world, raw, f"accounts[{index}]")
    for index, raw in enumerate(scenario.get("images") or []):
        where = f"images[{index}]"
        account, region = _field(raw, where, "account"), _field(raw, where, "region")
        image = raw.get("image")
        if not isinstance(image, Mapping):
            raise ScenarioError(f"{where}: 'image' must be an object of image attributes")
        try:
            world.add_image(account, region, image, project=raw.get("project"))
        except ValueError as error:
            raise ScenarioError(f"{where}: {error}") from None
    faults = scenario.get("faults")
    try:
        plan = FaultPlan.from_json(faults) if faults else None
    except (TypeError, ValueError) as error:
        raise ScenarioError(f"faults: {error}") from None
    return world, plan


def _add_account(world: World, raw: Mapping[str, Any], where: str) -> None:
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: an account is an object")
    name = _field(raw, where, "name")
    agencies = raw.get("agencies")
    expires = raw.get("token_expires_at")
    try:
        world.add_account(
            name,
            _field(raw, where, "domain_id"),
            _field(raw, where, "access_key", "ak"),
            _field(raw, where, "secret_key", "sk"),
            security_token=raw.get("security_token") or None,
            token_expires_at=float(expires) if expires is not None else None,
            agencies=frozenset(agencies) if agencies is not None else None,
            project_ids=raw.get("project_ids") or {},
        )
        world.account(name).denied.update(raw.get("denied") or ())
        for sub in raw.get("sub_projects") or []:
            world.add_project(name, sub["region"], sub["name"], sub.get("id"))
        for region, quota in (raw.get("quotas") or {}).items():
            world.set_quota(name, region, int(quota))
    except (KeyError, TypeError, ValueError) as error:
        raise ScenarioError(f"{where}: {error}") from None


def load_scenario(path: str | os.PathLike[str]) -> tuple[World, FaultPlan | None]:
    """Read a scenario file (JSON) and build its world."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ScenarioError(f"{path}: cannot read the scenario: {error}") from None
    try:
        return build_world(raw)
    except ScenarioError as error:
        raise ScenarioError(f"{path}: {error}") from None


def dump_scenario(scenario: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a scenario as JSON, atomically (temp file in the same folder, then rename)."""
    text = json.dumps(scenario, indent=1, sort_keys=True) + "\n"
    write_atomic(Path(path), text, durable=False)


def write_rows_csv(rows: Sequence[Mapping[str, str]], path: str | os.PathLike[str]) -> None:
    """The migration list of ``rows`` (the ``DEMO_COLUMNS``; ``expect`` is left out)."""
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=DEMO_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


# -- the demo -------------------------------------------------------------------------------

DEMO_PARAMS = {
    "seconds_per_gib": 0.06,
    "fixed_seconds": 1.0,
    "init_seconds": 0.3,
    "noise": 0.15,
    "fail_rate": 0.0,
    "cap": 5,
    "visibility": "immediate",
    "visibility_lag": 0.2,
    "regions": list(DEMO_REGIONS),
}


def _demo_faults(seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "retry_after": 0.5,
        "hang_seconds": 5.0,
        "rates": {
            "list": {"429": 0.03},
            "job": {"503": 0.03, "429": 0.02},
            "copy": {"lost_reply": 0.04, "503": 0.02},
        },
    }


class _Demo:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"demo:{seed}")
        self.images: list[dict[str, Any]] = []
        self.rows: list[dict[str, str]] = []

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def image(self, account: str, region: str, name: str, gib: int, **extra: Any) -> str:
        image_id = self.uuid()
        attrs: dict[str, Any] = {
            "id": image_id,
            "name": name,
            "__image_size": str(gib * GIB - self.rng.randrange(0, GIB // 2)),
            "min_disk": max(40, gib),
            "__os_type": self.rng.choice(("Linux", "Linux", "Windows")),
            "created_at": "2025-06-01T08:00:00Z",
        }
        attrs.update(extra)
        self.images.append({"account": account, "region": region, "image": attrs})
        return image_id

    def row(
        self, account: str, image_id: str, source: str, target: str, expect: str, **extra: str
    ) -> None:
        row = dict.fromkeys(DEMO_COLUMNS, "")
        row.update(tenant=account, image_id=image_id, source_region=source, target_region=target)
        row.update({"priority": "0", "expect": expect, **extra})
        self.rows.append(row)

    def size_gib(self, region: str) -> int:
        """1..300 GiB, skewed small (median ~8 GiB); within the region's limit."""
        limit = 300 if region != "ap-southeast-1" else 128
        return max(1, min(limit, math.ceil(self.rng.lognormvariate(2.0, 1.1))))

    def other_region(self, region: str) -> str:
        return self.rng.choice([r for r in DEMO_REGIONS if r != region])


def generate_demo_scenario(seed: int = 0) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The demo's world (3 accounts, 4 regions, ~70 images) and its migration-list rows.

    Each row carries ``expect``: ``succeeded`` or ``rejected``. One planted bad row of each
    kind: encrypted, ISO, too large for a 128 GiB region, same source and target, image not
    found, image not active, full-ECS without vault_id, and a same-named image already in the
    target without the tool's token. Timing is scaled so that 20 copies per tenant under a cap
    of 5 take about 15-20 s of simulated (real) time.
    """
    demo = _Demo(seed)
    accounts = []
    for name in DEMO_ACCOUNTS:
        secret = sha256(f"demo:{seed}:{name}".encode()).hexdigest()
        accounts.append(
            {
                "name": name,
                "domain_id": sha256(f"domain:{seed}:{name}".encode()).hexdigest()[:32],
                "access_key": ("DEMO" + name.upper() + secret[:12]).upper()[:20],
                "secret_key": secret[:40],
            }
        )
        for index in range(DEMO_GOOD_PER_ACCOUNT):
            source = DEMO_REGIONS[index % len(DEMO_REGIONS)]
            gib = 250 if index == 0 else demo.size_gib(source)
            image_name = f"{name}-{('web', 'db', 'app', 'cache', 'batch')[index % 5]}-{index:02d}"
            image_id = demo.image(name, source, image_name, gib)
            extra = {"name": f"{image_name}-copy"} if index % 2 else {}
            if index % 3 == 0:
                extra["description"] = "demo migration"
            if index % 7 == 3:
                extra["priority"] = "1"
            demo.row(name, image_id, source, demo.other_region(source), "succeeded", **extra)
        demo.image(name, "cn-east-3", f"{name}-unlisted", 5)  # not in the list: stays put
    _plant_bad_rows(demo)
    scenario: dict[str, Any] = {
        "version": SCENARIO_VERSION,
        "params": {**DEMO_PARAMS, "seed": seed},
        "accounts": accounts,
        "images": demo.images,
        "faults": _demo_faults(seed),
    }
    return scenario, demo.rows


def _plant_bad_rows(demo: _Demo) -> None:
    north, east, south, sea = DEMO_REGIONS
    rejected = "rejected"
    img = demo.image("alpha", north, "alpha-encrypted", 20, __system__cmkid=demo.uuid())
    demo.row("alpha", img, north, east, rejected)
    img = demo.image(
        "beta", east, "beta-installer", 4, disk_format="iso", virtual_env_type="IsoImage"
    )
    demo.row("beta", img, east, south, rejected)
    img = demo.image("gamma", sea, "gamma-bigdata", 200)
    demo.row("gamma", img, sea, north, rejected)
    img = demo.image("alpha", south, "alpha-same-region", 8)
    demo.row("alpha", img, south, south, rejected)
    demo.row("beta", demo.uuid(), north, sea, rejected)  # no such image
    img = demo.image("gamma", east, "gamma-uploading", 6, status="queued")
    demo.row("gamma", img, east, north, rejected)
    img = demo.image("alpha", north, "alpha-whole-ecs", 30, __whole_image="true")
    demo.row("alpha", img, north, south, rejected)
    img = demo.image("beta", south, "beta-portal", 12)
    demo.image("beta", sea, "beta-portal", 12, __description="made by hand")  # the conflict
    demo.row("beta", img, south, sea, rejected)
