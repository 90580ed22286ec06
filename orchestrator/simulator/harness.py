"""End-to-end harness: the real CLI in a subprocess against the simulator on 127.0.0.1.

``Cloud`` writes a scenario, serves it with ``ims-migrate simulator`` in its own process, and
writes the config and the list that point at it. The simulator's ground truth
(``GET /_sim/truth``) is the judge. Used by the e2e tests and by ``scripts/soak``, which is why
it lives in the package rather than in tests/.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.units import GIB
from orchestrator.simulator.truth import Truth

REGIONS = ["cn-north-4", "cn-east-3", "cn-south-1", "ap-southeast-1"]
FAST_PARAMS: dict[str, Any] = {
    "seconds_per_gib": 0.02,
    "fixed_seconds": 0.3,
    "init_seconds": 0.1,
    "noise": 0.1,
    "visibility": "immediate",
    "visibility_lag": 0.0,
    "regions": REGIONS,
}
FAST_TIMING = {
    "poll_min": 0.05,
    "poll_max": 1,
    "settle": 2,
    "backoff_max": 0.5,
    "request_timeout": 2,
    "job_deadline": 60,
}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


@dataclass
class Cloud:
    """A simulated cloud with accounts and images, its list and its config, in one folder."""

    root: Path
    params: dict[str, Any] = field(default_factory=lambda: dict(FAST_PARAMS))
    accounts: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)
    faults: dict[str, Any] | None = None
    timing: dict[str, Any] = field(default_factory=lambda: dict(FAST_TIMING))
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    seq: int = 0

    # -- building the world ---------------------------------------------------------------

    def account(self, name: str) -> None:
        self.accounts.append(
            {
                "name": name,
                "domain_id": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
                "access_key": f"AK{name.upper()}0000000000"[:20],
                "secret_key": f"SK-{name}-" + "s" * 30,
            }
        )

    def image(self, account: str, gib: float, region: str = "cn-north-4", **attrs: Any) -> str:
        self.seq += 1
        image_id = str(uuid.UUID(int=self.seq, version=4))
        image = {"id": image_id, "name": f"{account}-img-{self.seq:04d}"}
        image["__image_size"] = str(int(gib * GIB))
        image.update(attrs)
        self.images.append({"account": account, "region": region, "image": image})
        return image_id

    def row(self, account: str, gib: float, target: str = "cn-east-3", **attrs: Any) -> str:
        image_id = self.image(account, gib, **attrs)
        self.rows.append(
            {
                "tenant": account,
                "image_id": image_id,
                "source_region": "cn-north-4",
                "target_region": target,
            }
        )
        return image_id

    def populate(self, tenants: int, per_tenant: int, seed: int = 1) -> None:
        import random

        rng = random.Random(seed)
        for t in range(tenants):
            name = f"t{t}"
            self.account(name)
            for _ in range(per_tenant):
                self.row(name, rng.choice([1, 2, 5, 10, 20, 40]), target=rng.choice(REGIONS[1:]))

    # -- files ------------------------------------------------------------------------------

    @property
    def list_path(self) -> Path:
        return self.root / "migration.csv"

    @property
    def state_dir(self) -> Path:
        return self.root / "migration.state"

    @property
    def config_path(self) -> Path:
        return self.root / "ims-migrate.toml"

    def write_list(self) -> None:
        with self.list_path.open("w", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=["tenant", "image_id", "source_region", "target_region"]
            )
            writer.writeheader()
            writer.writerows(self.rows)

    def write_config(self) -> None:
        lines = [
            "[defaults]",
            'agency_name = "ims_admin_agency"',
            "[endpoints]",
            f'ims = "http://127.0.0.1:{self.port}/ims/{{region}}"',
            f'iam = "http://127.0.0.1:{self.port}/iam"',
            "[rate]",
            "requests_per_second = 1000",
            "[timing]",
            *(f"{key} = {value}" for key, value in self.timing.items()),
        ]
        for account in self.accounts:
            upper = account["name"].upper()
            lines += [
                f"[tenants.{account['name']}]",
                f'access_key_env = "E2E_{upper}_AK"',
                f'secret_key_env = "E2E_{upper}_SK"',
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMS_MIGRATE")}
        for account in self.accounts:
            upper = account["name"].upper()
            env[f"E2E_{upper}_AK"] = account["access_key"]
            env[f"E2E_{upper}_SK"] = account["secret_key"]
        env.update(overrides)
        return env

    # -- the simulator process --------------------------------------------------------------

    def start(self) -> None:
        scenario = {
            "version": 1,
            "params": self.params,
            "accounts": self.accounts,
            "images": self.images,
            "faults": self.faults,
        }
        (self.root / "scenario.json").write_text(json.dumps(scenario))
        port_file = self.root / "sim.port"
        port_file.unlink(missing_ok=True)
        with (self.root / "simulator.log").open("wb") as log:
            self.process = subprocess.Popen(
                cli("simulator", "--scenario", str(self.root / "scenario.json"), "--port-file",
                    str(port_file)),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.root / "simulator.log").read_text())
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.write_list()
        self.write_config()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def admin(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method="POST" if data is not None else "GET",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    def truth(self) -> Truth:
        return Truth.from_dict(self.admin("/_sim/truth"))

    # -- running the CLI --------------------------------------------------------------------

    def run_args(self, *extra: str) -> list[str]:
        return cli("run", str(self.list_path), "--config", str(self.config_path), *extra)

    def run(
        self, *extra: str, timeout: float = 120, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.run_args(*extra),
            env=dict(env) if env is not None else self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def spawn(self, *extra: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a run in the background; its stderr goes to ``run-N.log`` in the folder."""
        self.seq += 1
        with (self.root / f"run-{self.seq}.log").open("wb") as log:
            return subprocess.Popen(
                self.run_args(*extra),
                env=dict(env) if env is not None else self.env(),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def checkpoint(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "checkpoint.json").read_text()))

    def item_states(self) -> dict[str, str]:
        from orchestrator.state.checkpoint import read_snapshot

        snap = read_snapshot(self.state_dir)
        assert snap is not None
        return {key: value["phase"] for key, value in snap["items"].items()}
