"""The in-memory TenantCloud over the world, and the seeded fault plan both fronts share."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any

import pytest

from orchestrator.core.cloud import CloudError, CopyRequest, ErrorKind, TenantCloud
from orchestrator.core.units import GIB
from orchestrator.simulator.faults import Fault, FaultPlan, FaultRates
from orchestrator.simulator.inmemory import InMemoryTenantCloud
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.truth import Truth
from orchestrator.simulator.world import World

T0 = 1_800_000_000.0
NORTH, EAST = "cn-north-4", "cn-east-3"

pytestmark = pytest.mark.timeout(10)


@dataclass
class VirtualNow:
    value: float = T0

    def __call__(self) -> float:
        return self.value


def make(
    faults: FaultPlan | None = None, **params: Any
) -> tuple[World, InMemoryTenantCloud, VirtualNow]:
    defaults: dict[str, Any] = {
        "seconds_per_gib": 1.0,
        "fixed_seconds": 10.0,
        "init_seconds": 5.0,
        "noise": 0.0,
        "regions": (NORTH, EAST),
    }
    world = World(WorldParams(**{**defaults, **params}))
    world.add_account("acme", "d" * 32, "AKACME", "SKACME")
    now = VirtualNow()
    return world, InMemoryTenantCloud(world, "acme", now, faults), now


def request(name: str = "copy") -> CopyRequest:
    return CopyRequest(name, "ims-migrate:0123456789abcdef", EAST, EAST, "ims_admin_agency")


def src(world: World, gib: int = 10, **attrs: Any) -> str:
    image = world.add_image("acme", NORTH, {"name": "src", "__image_size": gib * GIB, **attrs})
    return str(image["id"])


async def expect_error(awaitable: Any) -> CloudError:
    with pytest.raises(CloudError) as caught:
        await awaitable
    return caught.value


def test_it_is_a_tenant_cloud() -> None:
    """The adapter satisfies the engine's TenantCloud protocol."""
    _, cloud, _ = make()
    typed: TenantCloud = cloud
    assert typed is cloud


async def test_probe_returns_the_domain_id() -> None:
    """probe() answers the account's domain id and counts an IAM request."""
    world, cloud, _ = make()
    assert await cloud.probe(NORTH) == "d" * 32
    assert world.truth(T0).requests == {"iam": 1}


async def test_copy_poll_and_find_the_copy() -> None:
    """A copy's job runs to SUCCESS and the new image is listed with its token."""
    world, cloud, now = make()
    job_id = await cloud.copy_image(NORTH, src(world), request())
    job = await cloud.get_job(NORTH, job_id)
    assert (job.status, job.progress, job.is_terminal) == ("INIT", 0.0, False)
    now.value = T0 + 15
    assert (await cloud.get_job(NORTH, job_id)).progress == pytest.approx(0.5)
    now.value = T0 + 25
    done = await cloud.get_job(NORTH, job_id)
    assert (done.status, done.is_terminal) == ("SUCCESS", True)
    (image,) = await cloud.list_images(EAST, name="copy")
    assert image.id == done.image_id
    assert image.description == "ims-migrate:0123456789abcdef"
    assert image.size_bytes == 10 * GIB
    assert image.status == "active"


async def test_listing_reads_every_page() -> None:
    """list_images follows the marker through every page."""
    world, cloud, _ = make()
    cloud.page_size = 2
    ids = {src(world) for _ in range(5)}
    assert {image.id for image in await cloud.list_images(NORTH)} == ids
    assert world.truth(T0).requests == {"list": 3}
    by_id = await cloud.list_images(NORTH, image_id=next(iter(ids)))
    assert len(by_id) == 1


@pytest.mark.parametrize(
    ("attrs", "kind", "code"),
    [
        ({"status": "queued"}, ErrorKind.PERMANENT, "IMG.0046"),
        ({"disk_format": "iso"}, ErrorKind.PERMANENT, "IMG.0167"),
        ({"__system__cmkid": "k"}, ErrorKind.PERMANENT, "IMG.0197"),
    ],
)
async def test_refusals_are_classified_like_the_real_client(
    attrs: dict[str, Any], kind: ErrorKind, code: str
) -> None:
    """A refused copy raises CloudError with the classify() kind, code and status 400."""
    world, cloud, _ = make()
    error = await expect_error(cloud.copy_image(NORTH, src(world, **attrs), request()))
    assert (error.kind, error.code, error.status) == (kind, code, 400)


async def test_the_cap_is_back_pressure() -> None:
    """The sixth copy in flight is BACK_PRESSURE (IMG.0060)."""
    world, cloud, _ = make()
    for n in range(5):
        await cloud.copy_image(NORTH, src(world), request(f"c{n}"))
    error = await expect_error(cloud.copy_image(NORTH, src(world), request("c5")))
    assert (error.kind, error.code) == (ErrorKind.BACK_PRESSURE, "IMG.0060")
    assert world.truth(T0).max_in_flight == {"acme": 5}


async def test_a_full_target_quota_is_quota() -> None:
    """IMG.0015 is the QUOTA kind; get_quota shows used and quota."""
    world, cloud, _ = make()
    world.set_quota("acme", EAST, 0)
    error = await expect_error(cloud.copy_image(NORTH, src(world), request()))
    assert error.kind is ErrorKind.QUOTA
    quota = await cloud.get_quota(EAST)
    assert (quota.used, quota.quota) == (0, 0)


async def test_an_unknown_job_is_not_found() -> None:
    """A job id the cloud does not know is NOT_FOUND."""
    _, cloud, _ = make()
    error = await expect_error(cloud.get_job(NORTH, "0" * 32))
    assert (error.kind, error.status) == (ErrorKind.NOT_FOUND, 404)


async def test_an_unknown_region_is_not_sent() -> None:
    """A region the world lacks fails before sending, like a DNS failure."""
    _, cloud, _ = make()
    error = await expect_error(cloud.list_images("xx-none-1"))
    assert error.kind is ErrorKind.NOT_SENT


async def test_sub_projects_are_addressed_by_name() -> None:
    """project= takes a project name of the region and lists that project's images."""
    world, cloud, _ = make()
    world.add_project("acme", NORTH, "cn-north-4_dev")
    dev = world.add_image("acme", NORTH, {"name": "dev"}, project="cn-north-4_dev")
    src(world)
    listed = await cloud.list_images(NORTH, project="cn-north-4_dev")
    assert [image.id for image in listed] == [dev["id"]]


# -- faults -------------------------------------------------------------------------------


async def test_lost_reply_copies_and_raises_unknown() -> None:
    """The copy is carried out, yet the caller sees UNKNOWN."""
    world, cloud, _ = make(FaultPlan(script={"copy": ["lost_reply"]}))
    image_id = src(world)
    error = await expect_error(cloud.copy_image(NORTH, image_id, request()))
    assert error.kind is ErrorKind.UNKNOWN
    truth = world.truth(T0)
    assert truth.submissions == {f"acme/{image_id}/{EAST}": 1}
    assert truth.lost_replies == 1
    assert truth.responses == {"copy": {"0": 1}}
    assert [image.status for image in await cloud.list_images(EAST)] == ["saving"]


@pytest.mark.parametrize(
    ("fault", "performed"),
    [("500", False), ("503", False), ("reset", False), ("hang", False), ("500_after", True)],
)
async def test_copy_faults_are_unknown(fault: str, performed: bool) -> None:
    """5xx, reset and hang on the copy are UNKNOWN; only 500_after carried the copy out."""
    world, cloud, _ = make(FaultPlan(script={"copy": [fault]}))
    error = await expect_error(cloud.copy_image(NORTH, src(world), request()))
    assert error.kind is ErrorKind.UNKNOWN
    assert world.truth(T0).copies_total == int(performed)


@pytest.mark.parametrize("fault", ["500", "503", "reset", "hang"])
async def test_get_faults_are_transient(fault: str) -> None:
    """The same faults on a GET are TRANSIENT."""
    _, cloud, _ = make(FaultPlan(script={"list": [fault]}))
    assert (await expect_error(cloud.list_images(NORTH))).kind is ErrorKind.TRANSIENT
    assert await cloud.list_images(NORTH) == []


async def test_throttling_is_transient_with_retry_after() -> None:
    """429 APIGW.0308 is TRANSIENT with the plan's retry_after, copy or not, and copies nothing."""
    world, cloud, _ = make(FaultPlan(retry_after=2.5, script={"copy": ["429"], "job": ["429"]}))
    error = await expect_error(cloud.copy_image(NORTH, src(world), request()))
    assert (error.kind, error.code, error.retry_after) == (ErrorKind.TRANSIENT, "APIGW.0308", 2.5)
    assert world.truth(T0).copies_total == 0
    assert (await expect_error(cloud.get_job(NORTH, "0" * 32))).kind is ErrorKind.TRANSIENT


async def test_a_wrong_secret_is_auth_and_locks_the_key() -> None:
    """A wrong SK fails with AUTH; five in a row lock the key even for the right SK."""
    world, _, now = make()
    bad = InMemoryTenantCloud(world, "acme", now, secret_key="wrong")
    good = InMemoryTenantCloud(world, "acme", now, secret_key="SKACME")
    for _ in range(5):
        error = await expect_error(bad.probe(NORTH))
        assert (error.kind, error.code) == (ErrorKind.AUTH, "APIGW.0301")
    assert (await expect_error(good.probe(NORTH))).kind is ErrorKind.AUTH
    now.value = T0 + 301
    assert await good.probe(NORTH) == "d" * 32
    assert world.truth(now.value).auth_failures == {"AKACME": 5}


async def test_an_expired_token_is_named() -> None:
    """A temporary key past its expiry fails with APIGW.0307."""
    world, _, now = make()
    world.add_account("sts", "f" * 32, "AKSTS", "SKSTS", security_token="t", token_expires_at=T0)
    now.value = T0 + 1
    cloud = InMemoryTenantCloud(world, "sts", now)
    error = await expect_error(cloud.list_images(NORTH))
    assert (error.kind, error.code) == (ErrorKind.AUTH, "APIGW.0307")


async def test_same_seed_same_story() -> None:
    """Two runs with one seed give the same faults, job ids and truth."""

    async def run() -> Truth:
        plan = FaultPlan(seed=9, rates={"copy": {"lost_reply": 0.3, "500": 0.2}})
        world, cloud, now = make(plan, noise=0.2, seed=4)
        for n in range(20):
            now.value += 1
            world.add_image("acme", NORTH, {"id": f"img-{n:02d}", "name": f"i{n}"})
            with contextlib.suppress(CloudError):
                await cloud.copy_image(NORTH, f"img-{n:02d}", request(f"c{n}"))
        return replace(world.truth(now.value), faults=plan.decided)

    first, second = await run(), await run()
    assert first == second
    assert first.faults["copy"]  # some faults happened


# -- the fault plan ---------------------------------------------------------------------------


def test_fault_rates_follow_their_probabilities() -> None:
    """Over many draws each fault's share is near its rate; kinds draw independently."""
    plan = FaultPlan(seed=1, rates={"job": FaultRates(error_503=0.2, throttle=0.1)})
    draws = [plan.decide("job") for _ in range(5000)]
    assert draws.count(Fault.ERROR_503) / 5000 == pytest.approx(0.2, abs=0.03)
    assert draws.count(Fault.THROTTLE) / 5000 == pytest.approx(0.1, abs=0.03)
    assert plan.decide("list") is None


def test_scripted_faults_come_first_and_in_order() -> None:
    """enqueue() forces the next decisions of one kind."""
    plan = FaultPlan()
    plan.enqueue("copy", "lost_reply", Fault.ERROR_503)
    assert [plan.decide("copy") for _ in range(3)] == [Fault.LOST_REPLY, Fault.ERROR_503, None]
    assert plan.decided == {"copy": {"lost_reply": 1, "503": 1}}


def test_fault_plan_json_round_trip_and_validation() -> None:
    """to_json/from_json round-trip; impossible plans are refused with a reason."""
    raw = {
        "seed": 5,
        "retry_after": 0.5,
        "hang_seconds": 2.0,
        "rates": {"copy": {"lost_reply": 0.1, "500": 0.05}, "list": {"429": 0.2}},
        "next": {"job": ["reset"]},
    }
    assert FaultPlan.from_json(raw).to_json() == raw
    bad_plans: list[tuple[dict[str, Any], str]] = [
        ({"rates": {"job": {"lost_reply": 0.1}}}, "only applies to copy"),
        ({"rates": {"copy": {"500": 0.7, "503": 0.7}}}, "more than 1"),
        ({"rates": {"copy": {"teapot": 0.1}}}, "unknown fault"),
        ({"rates": {"disk": {"500": 0.1}}}, "unknown endpoint kind"),
        ({"speed": 1}, "unknown fault plan keys"),
    ]
    for bad, reason in bad_plans:
        with pytest.raises(ValueError, match=reason):
            FaultPlan.from_json(bad)
