"""The simulator over HTTP on 127.0.0.1: signatures, routes, error shapes, faults, admin."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import anyio
import pytest
from yarl import URL

from orchestrator.core.credentials import Credentials
from orchestrator.core.units import GIB
from orchestrator.ims.signer import canonical_query, format_sdk_date, sign
from orchestrator.simulator.app import SERVICE, build_app, run_simulator, serve
from orchestrator.simulator.faults import FaultPlan
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.scenario import dump_scenario, generate_demo_scenario
from orchestrator.simulator.world import World

T0 = 1_800_000_000.0
NORTH, EAST = "cn-north-4", "cn-east-3"
ACME = Credentials("AKACME0000000000", "SKACME00000000000000000000000000000000")
OTHER = Credentials("AKOTHER000000000", "SKOTHER0000000000000000000000000000000")

pytestmark = pytest.mark.timeout(20)


@dataclass
class VirtualNow:
    value: float = T0

    def __call__(self) -> float:
        return self.value


@dataclass
class Sim:
    world: World
    now: VirtualNow
    port: int
    session: aiohttp.ClientSession
    app: Any
    image_id: str = ""
    projects: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        creds: Credentials = ACME,
        query: Iterable[tuple[str, str]] = (),
        payload: Any = None,
        project: str | None = NORTH,
        headers: dict[str, str] | None = None,
        date: str | None = None,
        tamper: bool = False,
        client_timeout: float = 5.0,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        """A request signed with orchestrator.ims.signer.sign, as the real client signs."""
        query_string = canonical_query(query)
        body = b"" if payload is None else json.dumps(payload).encode()
        extra = dict(headers or {})
        if body:
            extra["Content-Type"] = "application/json;charset=UTF-8"
        if project is not None:
            extra["X-Project-Id"] = self.projects.get(project, project)
        sdk_date = date or format_sdk_date(datetime.fromtimestamp(self.now(), UTC))
        signed = sign(
            creds, method, f"127.0.0.1:{self.port}", path, query_string, extra, body, sdk_date
        )
        if tamper:
            body += b" "
        url = URL(self.base + path + (f"?{query_string}" if query_string else ""), encoded=True)
        async with self.session.request(
            method,
            url,
            headers=signed,
            data=body,
            timeout=aiohttp.ClientTimeout(total=client_timeout),
        ) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None, response

    async def admin(self, method: str, path: str, payload: Any = None) -> Any:
        async with self.session.request(method, self.base + path, json=payload) as response:
            return await response.json()


def make_world() -> World:
    world = World(
        WorldParams(
            seconds_per_gib=1.0, fixed_seconds=10.0, init_seconds=5.0, noise=0.0,
            regions=(NORTH, EAST, "cn-south-1"),
        )
    )  # fmt: skip
    world.add_account("acme", "d" * 32, ACME.access_key, ACME.secret_key)
    world.add_account("other", "e" * 32, OTHER.access_key, OTHER.secret_key)
    return world


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    world = make_world()
    now = VirtualNow()
    app = build_app(world, None, now=now)
    runner, port = await serve(app)
    image = world.add_image("acme", NORTH, {"name": "web server", "__image_size": 10 * GIB})
    projects = {
        region: project.id
        for region in (NORTH, EAST)
        if (project := world.account("acme").project(region)) is not None
    }
    try:
        async with aiohttp.ClientSession() as session:
            yield Sim(world, now, port, session, app, image["id"], projects)
    finally:
        await runner.cleanup()


def copy_body(**overrides: str) -> dict[str, str]:
    out = {
        "name": "web-copy",
        "description": "ims-migrate:0123456789abcdef",
        "region": EAST,
        "project_name": EAST,
        "agency_name": "ims_admin_agency",
    }
    out.update(overrides)
    return out


LIST = f"/ims/{NORTH}/v2/cloudimages"


def copy_path(image_id: str) -> str:
    return f"/ims/{NORTH}/v1/cloudimages/{image_id}/cross_region_copy"


# -- signatures -----------------------------------------------------------------------------


async def test_a_correctly_signed_request_is_served(sim: Sim) -> None:
    """A signed listing with an encoded filter answers the account's images."""
    status, body, _ = await sim.call(
        "GET", LIST, query=[("__imagetype", "private"), ("name", "web server"), ("limit", "10")]
    )
    assert status == 200
    assert [image["id"] for image in body["images"]] == [sim.image_id]
    assert sim.world.truth(T0).requests == {"list": 1}
    assert sim.world.truth(T0).auth_failures == {}


async def test_the_official_sdk_signer_is_accepted(sim: Sim) -> None:
    """A request signed by huaweicloudsdkcore's own Signer passes verification."""
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    request = SdkRequest(
        method="GET",
        schema="http",
        host=f"127.0.0.1:{sim.port}",
        resource_path=LIST,
        query_params=[("__imagetype", "private"), ("limit", 100), ("status", "active")],
        header_params={
            "Content-Type": "application/json",
            "X-Project-Id": sim.projects[NORTH],
            "X-Sdk-Date": format_sdk_date(datetime.fromtimestamp(T0, UTC)),
        },
        body="",
    )
    Signer(SimpleNamespace(ak=ACME.access_key, sk=ACME.secret_key)).sign(request)
    url = URL(f"{request.schema}://{request.host}{request.uri}", encoded=True)
    async with sim.session.get(url, headers=request.header_params) as response:
        assert response.status == 200, await response.text()


async def test_a_tampered_request_is_refused_and_counted(sim: Sim) -> None:
    """A body changed after signing gets 401 APIGW.0301 in the gateway shape, and is counted."""
    status, body, response = await sim.call(
        "POST", copy_path(sim.image_id), payload=copy_body(), tamper=True
    )
    assert status == 401
    assert body["error_code"] == "APIGW.0301"
    assert "signature" in body["error_msg"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    truth = sim.world.truth(T0)
    assert truth.auth_failures == {ACME.access_key: 1}
    assert truth.copies_total == 0
    assert truth.responses == {"copy": {"401": 1}}


async def test_wrong_secret_missing_header_and_unknown_key_are_refused(sim: Sim) -> None:
    """A wrong SK, no Authorization at all and an unknown AK are all 401."""
    wrong = Credentials(ACME.access_key, "not-the-secret")
    assert (await sim.call("GET", LIST, creds=wrong))[0] == 401
    stranger = Credentials("AKNOBODY", "x")
    assert (await sim.call("GET", LIST, creds=stranger))[0] == 401
    async with sim.session.get(sim.base + LIST) as response:
        assert response.status == 401
    failures = sim.world.truth(T0).auth_failures
    assert failures == {ACME.access_key: 1, "AKNOBODY": 1, "<missing>": 1}


async def test_five_failures_lock_the_key(sim: Sim) -> None:
    """After 5 bad signatures in a row even a good one is refused for 5 minutes."""
    for _ in range(5):
        assert (await sim.call("GET", LIST, tamper=True, payload={}))[0] == 401
    status, body, _ = await sim.call("GET", LIST)
    assert status == 401
    assert "locked" in body["error_msg"]
    sim.now.value = T0 + 301
    assert (await sim.call("GET", LIST))[0] == 200
    truth = sim.world.truth(T0)
    assert truth.auth_failures == {ACME.access_key: 5}
    assert truth.auth_locked == {ACME.access_key: 1}


async def test_a_skewed_date_is_refused_with_apigw_0303(sim: Sim) -> None:
    """X-Sdk-Date 20 minutes off the server's clock is APIGW.0303."""
    skewed = format_sdk_date(datetime.fromtimestamp(T0 - 1200, UTC))
    status, body, _ = await sim.call("GET", LIST, date=skewed)
    assert (status, body["error_code"]) == (401, "APIGW.0303")


async def test_temporary_credentials_need_their_token_until_it_expires(sim: Sim) -> None:
    """An STS key works with its token, fails without it, and gets APIGW.0307 once expired."""
    sts = Credentials("AKSTS00000000000", "SKSTS", "token-1")
    sim.world.add_account("sts", "f" * 32, sts.access_key, sts.secret_key,
                          security_token="token-1", token_expires_at=T0 + 60)  # fmt: skip
    iam = "/iam/v3/projects"
    assert (await sim.call("GET", iam, creds=sts, project=None))[0] == 200
    bare = Credentials(sts.access_key, sts.secret_key)
    assert (await sim.call("GET", iam, creds=bare, project=None))[0] == 401
    sim.now.value = T0 + 61
    status, body, _ = await sim.call("GET", iam, creds=sts, project=None)
    assert (status, body["error_code"]) == (401, "APIGW.0307")


# -- IMS and IAM routes -----------------------------------------------------------------------


async def test_copy_then_poll_through_both_job_paths(sim: Sim) -> None:
    """POST returns a job id; both job paths show it progress to SUCCESS with the new id."""
    status, body, _ = await sim.call("POST", copy_path(sim.image_id), payload=copy_body())
    assert status == 200
    job_id = body["job_id"]
    new = f"/ims/{NORTH}/v1/cloudimages/job/{job_id}"
    old = f"/ims/{NORTH}/v1/{sim.projects[NORTH]}/jobs/{job_id}"
    assert (await sim.call("GET", new))[1]["status"] == "INIT"
    sim.now.value = T0 + 100
    for path in (new, old):
        status, job, _ = await sim.call("GET", path)
        assert (status, job["status"], job["job_id"]) == (200, "SUCCESS", job_id)
    _, listing, _ = await sim.call(
        "GET", f"/ims/{EAST}/v2/cloudimages", project=EAST, query=[("name", "web-copy")]
    )
    assert [image["id"] for image in listing["images"]] == [job["entities"]["image_id"]]
    assert sim.world.truth(T0).requests == {"copy": 1, "job": 3, "list": 1}


async def test_refusals_use_the_ims_error_shape(sim: Sim) -> None:
    """A refused copy is 400 with {"error": {"code", "message"}}."""
    status, body, _ = await sim.call(
        "POST", copy_path(sim.image_id), payload=copy_body(region=NORTH, project_name=NORTH)
    )
    assert status == 400
    assert body["error"]["code"] == "IMG.0001"
    assert "differ" in body["error"]["message"]
    status, body, _ = await sim.call("POST", copy_path(sim.image_id), payload=None)
    assert (status, body["error"]["code"]) == (400, "IMG.0007")


async def test_the_sixth_copy_gets_img_0060_over_http(sim: Sim) -> None:
    """The cap answers 400 IMG.0060 with the documented message."""
    for n in range(5):
        image = sim.world.add_image("acme", NORTH, {"name": f"i{n}"})
        assert (await sim.call("POST", copy_path(image["id"]), payload=copy_body()))[0] == 200
    status, body, _ = await sim.call("POST", copy_path(sim.image_id), payload=copy_body())
    assert (status, body["error"]["code"]) == (400, "IMG.0060")
    assert "flow control limit" in body["error"]["message"]


async def test_project_header_is_required_and_must_be_the_accounts(sim: Sim) -> None:
    """No X-Project-Id is 400 IMG.0001; another account's or region's project is IMG.0108."""
    status, body, _ = await sim.call("GET", LIST, project=None)
    assert (status, body["error"]["code"]) == (400, "IMG.0001")
    foreign = sim.world.account("other").project(NORTH)
    assert foreign is not None
    assert (await sim.call("GET", LIST, project=foreign.id))[1]["error"]["code"] == "IMG.0108"
    assert (await sim.call("GET", LIST, project=EAST))[1]["error"]["code"] == "IMG.0108"


async def test_jobs_of_another_account_are_not_found(sim: Sim) -> None:
    """Another account asking for a job id gets 404 with IMG.0027 in the IMS shape."""
    _, body, _ = await sim.call("POST", copy_path(sim.image_id), payload=copy_body())
    other_project = sim.world.account("other").project(NORTH)
    assert other_project is not None
    status, error, _ = await sim.call(
        "GET", f"/ims/{NORTH}/v1/cloudimages/job/{body['job_id']}",
        creds=OTHER, project=other_project.id,
    )  # fmt: skip
    assert (status, error["error"]["code"]) == (404, "IMG.0027")


async def test_listing_paginates_with_marker_over_http(sim: Sim) -> None:
    """limit/marker pages cover every image once, in id order."""
    for n in range(4):
        sim.world.add_image("acme", NORTH, {"name": f"p{n}"})
    seen: list[str] = []
    marker: list[tuple[str, str]] = []
    while True:
        _, body, _ = await sim.call("GET", LIST, query=[("limit", "2"), *marker])
        if not body["images"]:
            break
        seen += [image["id"] for image in body["images"]]
        marker = [("marker", seen[-1])]
    assert seen == sorted(seen)
    assert len(seen) == 5
    assert (await sim.call("GET", LIST, query=[("limit", "0")]))[0] == 400


async def test_quota_and_iam_project_lookup(sim: Sim) -> None:
    """Quota has the documented shape; IAM finds the project by name with its domain id."""
    _, quota, _ = await sim.call("GET", f"/ims/{NORTH}/v1/cloudimages/quota")
    assert quota["quotas"]["resources"][0] | {"max": 0} == {
        "type": "image", "used": 1, "quota": 1000, "min": 1, "max": 0,
    }  # fmt: skip
    status, body, _ = await sim.call(
        "GET", "/iam/v3/projects", query=[("name", EAST)], project=None
    )
    assert status == 200
    assert body["projects"] == [
        {
            "id": sim.projects[EAST], "name": EAST, "domain_id": "d" * 32, "parent_id": "d" * 32,
            "enabled": True, "is_domain": False, "description": "",
        }
    ]  # fmt: skip
    assert sim.world.truth(T0).requests == {"quota": 1, "iam": 1}


async def test_unknown_routes_and_regions_are_gateway_404s(sim: Sim) -> None:
    """A path IMS does not have, or a region the world lacks, is APIGW.0101."""
    for path in ("/ims/xx-none-1/v2/cloudimages", "/nothing/here"):
        status, body, _ = await sim.call("GET", path)
        assert (status, body["error_code"]) == (404, "APIGW.0101")


# -- faults --------------------------------------------------------------------------------


def set_faults(sim: Sim, **script: list[str]) -> None:
    sim.app[SERVICE].faults = FaultPlan(seed=1, retry_after=2.5, hang_seconds=3.0, script=script)


async def test_throttling_answers_429_with_retry_after(sim: Sim) -> None:
    """A throttled call is 429 APIGW.0308 with Retry-After; the next one is served."""
    set_faults(sim, list=["429"])
    status, body, response = await sim.call("GET", LIST)
    assert (status, body["error_code"]) == (429, "APIGW.0308")
    assert "ratelimit" in body["error_msg"]
    assert response.headers["Retry-After"] == "2.5"
    assert (await sim.call("GET", LIST))[0] == 200


async def test_server_errors_do_not_copy(sim: Sim) -> None:
    """500 and 503 on the copy answer an error and start nothing."""
    set_faults(sim, copy=["500", "503"])
    assert (await sim.call("POST", copy_path(sim.image_id), payload=copy_body()))[0] == 500
    assert (await sim.call("POST", copy_path(sim.image_id), payload=copy_body()))[0] == 503
    truth = sim.world.truth(T0)
    assert truth.copies_total == 0
    assert truth.responses == {"copy": {"500": 1, "503": 1}}


async def test_lost_reply_copies_but_drops_the_connection(sim: Sim) -> None:
    """The copy is carried out, then the connection closes without an answer."""
    set_faults(sim, copy=["lost_reply"])
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await sim.call("POST", copy_path(sim.image_id), payload=copy_body())
    truth = sim.world.truth(T0)
    assert truth.copies_total == 1
    assert truth.lost_replies == 1
    assert truth.submissions == {f"acme/{sim.image_id}/{EAST}": 1}
    assert truth.responses == {"copy": {"0": 1}}


async def test_error_after_copy_answers_500_but_copies(sim: Sim) -> None:
    """500_after: the copy exists although the answer is an error."""
    set_faults(sim, copy=["500_after"])
    assert (await sim.call("POST", copy_path(sim.image_id), payload=copy_body()))[0] == 500
    assert sim.world.truth(T0).copies_total == 1


async def test_reset_drops_a_get_without_answer(sim: Sim) -> None:
    """A reset closes the connection; the request is recorded with status 0."""
    set_faults(sim, job=["reset", "reset"])  # aiohttp retries an idempotent GET once by itself
    with pytest.raises(aiohttp.ClientConnectionError):
        await sim.call("GET", f"/ims/{NORTH}/v1/cloudimages/job/{'a' * 32}")
    assert set(sim.world.truth(T0).responses["job"]) == {"0"}


async def test_hang_outlasts_the_client_timeout_and_shutdown_is_prompt() -> None:
    """A hung request times the client out; stopping the server ends the hang at once."""
    world, now = make_world(), VirtualNow()
    app = build_app(world, FaultPlan(hang_seconds=60.0, script={"list": ["hang"]}), now=now)
    runner, port = await serve(app)
    try:
        async with aiohttp.ClientSession() as session:
            sim = Sim(world, now, port, session, app)
            with anyio.fail_after(2), pytest.raises(TimeoutError):
                await sim.call("GET", LIST, client_timeout=0.3)
    finally:
        started = time.monotonic()
        await runner.cleanup()
    assert time.monotonic() - started < 1.0  # not the 2 s shutdown timeout, nor the 60 s hang
    assert world.truth(T0).responses == {"list": {"0": 1}}


# -- admin --------------------------------------------------------------------------------


async def test_admin_endpoints(sim: Sim) -> None:
    """health, faults, occupy, fail_job and truth work without signatures."""
    assert (await sim.admin("GET", "/_sim/health"))["status"] == "ok"
    plan = {"seed": 3, "rates": {"job": {"503": 0.5}}, "next": {"copy": ["lost_reply"]}}
    assert (await sim.admin("POST", "/_sim/faults", plan))["rates"] == plan["rates"]
    assert (await sim.admin("GET", "/_sim/faults"))["next"] == {"copy": ["lost_reply"]}
    assert "error" in await sim.admin("POST", "/_sim/faults", {"rates": {"job": {"lost_reply": 1}}})
    occupied = await sim.admin(
        "POST", "/_sim/occupy", {"account": "acme", "count": 5, "seconds": 9}
    )
    assert len(occupied["jobs"]) == 5
    await sim.admin("POST", "/_sim/fail_job", {"job_id": occupied["jobs"][0], "code": "IMG.0060"})
    truth = await sim.admin("GET", "/_sim/truth")
    assert truth["in_flight_now"]["acme"] == 4
    assert truth["external_jobs"] == {"acme": 5}
    assert (await sim.admin("POST", "/_sim/faults", {})) is None


# -- running from a scenario ----------------------------------------------------------------


async def test_run_simulator_serves_a_scenario_until_cancelled(tmp_path: Path) -> None:
    """The port file appears once listening; cancelling stops the server."""
    scenario, _ = generate_demo_scenario(0)
    path, port_file = tmp_path / "scenario.json", tmp_path / "port"
    dump_scenario(scenario, path)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_simulator, path, "127.0.0.1", 0, port_file)
        with anyio.fail_after(5):
            while not port_file.exists():  # noqa: ASYNC110 (the file is the only signal)
                await anyio.sleep(0.01)
        port = int(port_file.read_text(encoding="utf-8"))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/_sim/truth") as response,
        ):
            truth = await response.json()
        assert set(truth["in_flight_now"]) == {"alpha", "beta", "gamma"}
        tg.cancel_scope.cancel()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session:
            await session.get(f"http://127.0.0.1:{port}/_sim/health")
