"""At the edges of a real account: project ids configured (no IAM at all), endpoints per tenant
(another site), a proxy that cannot be used. The real CLI against the simulator on 127.0.0.1
where the HTTP matters; ``main`` in process otherwise."""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

import pytest

from orchestrator.config_file import load_config
from orchestrator.simulator.harness import REGIONS, Cloud
from tests.inprocess import LocalCloud


def project_ids(cloud: Cloud, name: str) -> str:
    """The ``project_ids`` line of a tenant: the ids the simulator gives its default projects."""
    account = next(a for a in cloud.accounts if a["name"] == name)
    ids = {r: sha256(f"{account['domain_id']}/{r}".encode()).hexdigest()[:32] for r in REGIONS}
    return "project_ids = { " + ", ".join(f'"{r}" = "{i}"' for r, i in ids.items()) + " }"


def iam_requests(cloud: Cloud) -> int:
    return sum(1 for r in cloud.admin("/_sim/requests")["requests"] if r[2] == "iam")


@pytest.mark.e2e
def test_configured_project_ids_make_no_iam_request(cloud: Cloud) -> None:
    """Every project a tenant uses configured: the run succeeds without one request to IAM."""
    cloud.populate(tenants=2, per_tenant=3)
    cloud.start()
    config = cloud.config_path.read_text()
    for name in ("t0", "t1"):
        config = config.replace(
            f"[tenants.{name}]\n", f"[tenants.{name}]\n{project_ids(cloud, name)}\n"
        )
    cloud.config_path.write_text(config)
    done = cloud.run("--quiet")
    assert done.returncode == 0, done.stderr
    assert iam_requests(cloud) == 0
    assert set(cloud.item_states().values()) == {"succeeded"}


@pytest.mark.e2e
def test_a_tenant_of_another_site_uses_its_own_endpoints(cloud: Cloud) -> None:
    """[tenants.t0.endpoints] overrides the run's [endpoints] (here a dead port) for t0 only."""
    cloud.populate(tenants=1, per_tenant=2)
    cloud.start()
    live = f"http://127.0.0.1:{cloud.port}"
    config = cloud.config_path.read_text().replace(live, "http://127.0.0.1:9")
    config += f'[tenants.t0.endpoints]\nims = "{live}/ims/{{region}}"\niam = "{live}/iam"\n'
    cloud.config_path.write_text(config)
    done = cloud.run("--quiet")
    assert done.returncode == 0, done.stderr
    assert set(cloud.item_states().values()) == {"succeeded"}


def test_an_unusable_proxy_exits_2_before_any_call(local_cloud: LocalCloud) -> None:
    """HTTPS_PROXY names a SOCKS proxy: exit 2 naming the variable, no request sent."""
    cloud = local_cloud
    cloud.populate(tenants=1, per_tenant=1)
    cloud.start()
    done = cloud.run(env=cloud.env(HTTPS_PROXY="socks5://proxy.example:1080"))
    assert done.returncode == 2, done.stderr
    assert "HTTPS_PROXY" in done.stderr
    assert cloud.world is not None
    assert cloud.world.request_log == []


def test_a_tenants_endpoints_take_the_runs_for_the_keys_they_do_not_set(tmp_path: Path) -> None:
    """[tenants.eu.endpoints] iam only: its ims and ims_by_region are the run's; account read."""
    file = tmp_path / "ims-migrate.toml"
    file.write_text(
        '[endpoints]\nims = "https://ims.{region}.example.com"\n'
        '[endpoints.ims_by_region]\n"cn-north-4" = "https://n4.example.com"\n'
        '[tenants.eu]\naccount = "d0"\n'
        '[tenants.eu.endpoints]\niam = "https://iam.eu-west-101.myhuaweicloud.eu"\n'
    )
    config = load_config(file, {}, tmp_path)
    eu = config.tenants["eu"]
    site = eu.endpoints_in(config)
    assert site.iam == "https://iam.eu-west-101.myhuaweicloud.eu"
    assert site.ims_for("cn-east-3") == "https://ims.cn-east-3.example.com"
    assert site.ims_for("cn-north-4") == "https://n4.example.com"
    assert eu.account == "d0"
    assert config.endpoints.iam == "https://iam.myhuaweicloud.com"
