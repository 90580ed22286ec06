"""The simulator's world: every copy constraint, the cap, time, visibility, listing, truth."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import KNOWN_REGIONS, Config
from orchestrator.core.units import GIB
from orchestrator.simulator.images import SimError
from orchestrator.simulator.params import REGIONS, WorldParams
from orchestrator.simulator.scenario import (
    DEMO_ACCOUNTS,
    DEMO_COLUMNS,
    DEMO_REGIONS,
    ScenarioError,
    build_world,
    dump_scenario,
    generate_demo_scenario,
    load_scenario,
    write_rows_csv,
)
from orchestrator.simulator.truth import Truth
from orchestrator.simulator.world import World

T0 = 1_800_000_000.0
NORTH, EAST, SOUTH, SEA = "cn-north-4", "cn-east-3", "cn-south-1", "ap-southeast-1"


def make_world(**params: Any) -> World:
    defaults: dict[str, Any] = {
        "seconds_per_gib": 1.0,
        "fixed_seconds": 10.0,
        "init_seconds": 5.0,
        "noise": 0.0,
        "regions": (NORTH, EAST, SOUTH, SEA),
    }
    world = World(WorldParams(**{**defaults, **params}))
    world.add_account("acme", "d" * 32, "AKACME", "SKACME")
    world.add_account("other", "e" * 32, "AKOTHER", "SKOTHER")
    return world


def body(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": "copy-1",
        "description": "ims-migrate:0123456789abcdef",
        "region": EAST,
        "project_name": EAST,
        "agency_name": "ims_admin_agency",
    }
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not None}


def add(world: World, gib: int = 10, region: str = NORTH, **attrs: Any) -> str:
    image = world.add_image("acme", region, {"name": "src", "__image_size": gib * GIB, **attrs})
    return str(image["id"])


def refusal(world: World, image_id: str, payload: dict[str, Any], region: str = NORTH) -> str:
    with pytest.raises(SimError) as caught:
        world.copy("acme", region, image_id, payload, T0)
    assert caught.value.status == 400
    return caught.value.code


# -- constraints ---------------------------------------------------------------------------


def test_an_eligible_copy_is_accepted_and_counted() -> None:
    """A valid request returns a 32-hex job id and counts one submission for the item."""
    world = make_world()
    image_id = add(world)
    job_id = world.copy("acme", NORTH, image_id, body(), T0)
    assert len(job_id) == 32
    assert world.truth(T0).submissions == {f"acme/{image_id}/{EAST}": 1}


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"name": "x" * 129}, "IMG.0002"),
        ({"name": " leading"}, "IMG.0003"),
        ({"name": "bad<name"}, "IMG.0003"),
        ({"name": None}, "IMG.0001"),
        ({"description": "d" * 1025}, "IMG.0004"),
        ({"description": "has <html>"}, "IMG.0001"),
        ({"description": "two\nlines"}, "IMG.0001"),
        ({"region": None}, "IMG.0001"),
        ({"region": "xx-nowhere-1"}, "IMG.0001"),
        ({"region": NORTH, "project_name": NORTH}, "IMG.0001"),
        ({"project_name": "cn-east-3_nope"}, "IMG.0145"),
        ({"project_name": None}, "IMG.0001"),
        ({"agency_name": ""}, "IMG.0001"),
        ({"vault_id": 7}, "IMG.0001"),
    ],
)
def test_bad_bodies_are_refused_with_their_code(overrides: dict[str, Any], code: str) -> None:
    """Each malformed body field gets a synchronous 400 with its IMG code."""
    world = make_world()
    assert refusal(world, add(world), body(**overrides)) == code


def test_a_full_length_name_and_description_are_fine() -> None:
    """128 characters of name and 1024 of description are within the limits."""
    world = make_world()
    world.copy("acme", NORTH, add(world), body(name="n" * 128, description="d" * 1024), T0)


def test_same_region_is_refused_with_a_clear_message() -> None:
    """Copying to the source region is refused, naming the reason."""
    world = make_world()
    with pytest.raises(SimError, match="must differ"):
        world.copy("acme", EAST, add(world, region=EAST), body(), T0)


@pytest.mark.parametrize(
    ("attrs", "code"),
    [
        ({"status": "queued"}, "IMG.0046"),
        ({"__system__cmkid": "a1b2c3"}, "IMG.0197"),
        ({"__system__encrypted": "1"}, "IMG.0197"),
        ({"disk_format": "iso"}, "IMG.0167"),
        ({"virtual_env_type": "IsoImage"}, "IMG.0167"),
        ({"__whole_image": True}, "IMG.0130"),
    ],
)
def test_ineligible_images_are_refused(attrs: dict[str, Any], code: str) -> None:
    """Not active, encrypted, ISO and full-ECS (without vault) images are refused."""
    world = make_world()
    assert refusal(world, add(world, **attrs), body()) == code


def test_full_ecs_image_with_vault_is_accepted() -> None:
    """A full-ECS image copies when the body names a vault."""
    world = make_world()
    world.copy("acme", NORTH, add(world, __whole_image="true"), body(vault_id="v-1"), T0)


def test_unknown_and_foreign_images_are_not_found() -> None:
    """A missing id, and another account's image, are both IMG.0027."""
    world = make_world()
    foreign = world.add_image("other", NORTH, {"name": "theirs"})["id"]
    assert refusal(world, "00000000-0000-4000-8000-000000000000", body()) == "IMG.0027"
    assert refusal(world, foreign, body()) == "IMG.0027"


@pytest.mark.parametrize(
    ("region", "gib", "min_disk", "accepted"),
    [
        (NORTH, 300, 300, True),
        (NORTH, 301, 301, False),
        (SEA, 128, 128, True),
        (SEA, 129, 129, False),  # by bytes and by min_disk
        (SEA, 20, 129, False),  # by min_disk alone
        (SOUTH, 200, 200, True),
    ],
)
def test_size_limit_depends_on_the_source_region(
    region: str, gib: int, min_disk: int, accepted: bool
) -> None:
    """300 GiB in the four large regions, 128 elsewhere, on min_disk and on bytes."""
    world = make_world()
    image_id = add(world, gib, region, min_disk=min_disk)
    payload = body(region=NORTH if region != NORTH else EAST)
    payload["project_name"] = payload["region"]
    if accepted:
        world.copy("acme", region, image_id, payload, T0)
    else:
        assert refusal(world, image_id, payload, region) == "IMG.0001"


def test_product_defaults_agree_with_the_documented_limits() -> None:
    """The product's default size limits and regions are the simulator's own documented ones."""
    product, documented = Config(), WorldParams()
    for region in REGIONS:
        assert product.size_limit_gib(region) == documented.size_limit_gib(region), region
    assert {r for r in REGIONS if documented.size_limit_gib(r) == 300} == {
        "cn-south-1",
        "cn-east-3",
        "cn-east-2",
        "cn-north-4",
    }
    assert product.size_limit_gib("xx-unknown-1") == documented.size_limit_gib("xx-unknown-1")
    assert documented.size_limit_gib("xx-unknown-1") == 128
    assert set(KNOWN_REGIONS) == set(REGIONS)


def test_target_quota_full_is_refused() -> None:
    """IMG.0015 when the target project has no room; the copy itself takes room."""
    world = make_world()
    world.set_quota("acme", EAST, 1)
    world.copy("acme", NORTH, add(world), body(), T0)
    assert world.quota("acme", EAST, now=T0) == {"used": 1, "quota": 1}
    assert refusal(world, add(world), body(name="copy-2")) == "IMG.0015"


def test_name_conflicts_are_refused_only_when_configured() -> None:
    """IMG.0009 is opt-in (UNVERIFIED whether IMS checks it)."""
    world = make_world(reject_name_conflicts=True)
    world.add_image("acme", EAST, {"name": "copy-1"})
    assert refusal(world, add(world), body()) == "IMG.0009"
    lenient = make_world()
    lenient.add_image("acme", EAST, {"name": "copy-1"})
    lenient.copy("acme", NORTH, add(lenient), body(), T0)


def test_restricted_agencies_refuse_unknown_ones() -> None:
    """An account listing its agencies refuses others with IMG.0179."""
    world = make_world()
    world.add_account("strict", "f" * 32, "AKS", "SKS", agencies=frozenset({"ims_admin_agency"}))
    image_id = world.add_image("strict", NORTH, {"name": "s"})["id"]
    with pytest.raises(SimError) as caught:
        world.copy("strict", NORTH, image_id, body(agency_name="other_agency"), T0)
    assert caught.value.code == "IMG.0179"


def test_a_project_of_another_region_is_refused() -> None:
    """X-Project-Id must be a project of the account in the source region (IMG.0108)."""
    world = make_world()
    east_project = world.account("acme").project(EAST)
    assert east_project is not None
    with pytest.raises(SimError) as caught:
        world.copy("acme", NORTH, add(world), body(), T0, project_id=east_project.id)
    assert caught.value.code == "IMG.0108"


def test_refusals_are_counted_but_are_no_submissions() -> None:
    """Truth counts refusals by code and never as submissions."""
    world = make_world()
    refusal(world, add(world, status="saving"), body())
    truth = world.truth(T0)
    assert truth.rejections == {"IMG.0046": 1}
    assert truth.submissions == {}
    assert truth.copies_total == 0


# -- the cap ------------------------------------------------------------------------------


def test_sixth_copy_in_flight_is_refused_with_img_0060() -> None:
    """Five copies in INIT/RUNNING fill the account; the sixth gets the flow-control refusal."""
    world = make_world()
    for n in range(5):
        world.copy("acme", NORTH, add(world), body(name=f"c{n}"), T0)
    with pytest.raises(SimError) as caught:
        world.copy("acme", NORTH, add(world), body(name="c5"), T0)
    assert (caught.value.status, caught.value.code) == (400, "IMG.0060")
    assert "flow control limit" in caught.value.message
    assert world.truth(T0).max_in_flight == {"acme": 5}


def test_cap_is_per_account_and_frees_when_jobs_end() -> None:
    """Another account is unaffected, and a slot frees when a job finishes."""
    world = make_world()
    for n in range(5):
        world.copy("acme", NORTH, add(world, 1), body(name=f"c{n}"), T0)
    other = world.add_image("other", NORTH, {"name": "o"})["id"]
    world.copy("other", NORTH, other, body(), T0)
    later = T0 + 5 + 10 + 1 + 0.1  # init + fixed + 1 GiB
    assert world.in_flight("acme", later) == 0
    world.copy("acme", NORTH, add(world), body(name="c5"), later)


def test_cap_is_configurable() -> None:
    """A world with cap 2 refuses the third copy."""
    world = make_world(cap=2)
    world.copy("acme", NORTH, add(world), body(name="a"), T0)
    world.copy("acme", NORTH, add(world), body(name="b"), T0)
    assert refusal(world, add(world), body(name="c")) == "IMG.0060"


def test_external_jobs_hold_slots_within_the_cap() -> None:
    """occupy() takes only free slots, counts as in flight and frees after its time."""
    world = make_world()
    world.copy("acme", NORTH, add(world), body(), T0)
    started = world.occupy("acme", 10, 30.0, T0)
    assert len(started) == 4
    assert refusal(world, add(world), body(name="x")) == "IMG.0060"
    truth = world.truth(T0)
    assert truth.max_in_flight == {"acme": 5}
    assert truth.external_jobs == {"acme": 4}
    assert truth.copies_total == 1
    assert world.in_flight("acme", T0 + 31) == 0


# -- time ---------------------------------------------------------------------------------


def test_job_progresses_from_init_to_success() -> None:
    """INIT, then RUNNING with a linear percent, then SUCCESS with the new image id."""
    world = make_world()
    job_id = world.copy("acme", NORTH, add(world, 10), body(), T0)  # 5 s init, 20 s run
    init = world.job("acme", NORTH, job_id, T0 + 1)
    assert (init["status"], init["entities"]["process_percent"]) == ("INIT", 0.0)
    running = world.job("acme", NORTH, job_id, T0 + 15)
    assert running["status"] == "RUNNING"
    assert running["entities"]["process_percent"] == pytest.approx(0.5)
    assert "image_id" not in running["entities"]
    done = world.job("acme", NORTH, job_id, T0 + 25)
    assert done["status"] == "SUCCESS"
    assert done["entities"]["process_percent"] == 1
    assert done["error_code"] is None
    assert done["fail_reason"] is None
    assert done["job_type"] == "imsCrossRegionCopyImageJob"
    assert done["begin_time"].endswith("Z")
    assert done["end_time"].endswith("Z")
    new_id = done["entities"]["image_id"]
    copied = world.image(EAST, new_id, T0 + 25)
    assert copied is not None
    assert copied["status"] == "active"


def test_duration_grows_with_size() -> None:
    """Without noise a job lasts fixed + size x seconds_per_gib after init."""
    world = make_world()
    small = world.copy("acme", NORTH, add(world, 10), body(name="s"), T0)
    large = world.copy("acme", NORTH, add(world, 40), body(name="l"), T0)
    assert world.jobs[small].end - T0 == pytest.approx(5 + 10 + 10, abs=0.01)
    assert world.jobs[large].end - T0 == pytest.approx(5 + 10 + 40, abs=0.01)


def test_noise_is_seeded_and_bounded() -> None:
    """The same seed gives the same durations; noise stays within its bounds."""
    ends = []
    for _ in range(2):
        world = make_world(noise=0.2, seed=42)
        image = world.add_image("acme", NORTH, {"id": "img-1", "name": "a", "__image_size": GIB})
        ends.append(world.jobs[world.copy("acme", NORTH, image["id"], body(), T0)].end - T0)
    assert ends[0] == ends[1]
    assert 5 + 11 * 0.8 <= ends[0] <= 5 + 11 * 1.2


def test_failed_jobs_report_code_and_reason() -> None:
    """With fail_rate 1 the job ends in FAIL with top-level error_code and fail_reason."""
    world = make_world(fail_rate=1.0, fail_code="IMG.0500")
    job_id = world.copy("acme", NORTH, add(world), body(), T0)
    failed = world.job("acme", NORTH, job_id, T0 + 100)
    assert failed["status"] == "FAIL"
    assert failed["error_code"] == "IMG.0500"
    assert failed["fail_reason"]
    assert "image_id" not in failed["entities"]


def test_fail_job_ends_a_running_job_now() -> None:
    """fail_job() makes a running job FAIL at once with the given code."""
    world = make_world()
    job_id = world.copy("acme", NORTH, add(world), body(), T0)
    world.fail_job(job_id, T0 + 6, "IMG.0060", "too many tasks")
    failed = world.job("acme", NORTH, job_id, T0 + 6)
    assert (failed["status"], failed["error_code"]) == ("FAIL", "IMG.0060")
    assert world.in_flight("acme", T0 + 6) == 0


def test_jobs_answer_only_their_account_and_region() -> None:
    """Another account's job, a job asked in another region, or an unknown id: 404."""
    world = make_world()
    job_id = world.copy("acme", NORTH, add(world), body(), T0)
    for account, region, jid in (
        ("other", NORTH, job_id),
        ("acme", EAST, job_id),
        ("acme", NORTH, "f" * 32),
    ):
        with pytest.raises(SimError) as caught:
            world.job(account, region, jid, T0)
        assert (caught.value.status, caught.value.code) == (404, "IMG.0027")


# -- visibility ---------------------------------------------------------------------------


def listed(world: World, now: float) -> list[dict[str, Any]]:
    return world.list_images("acme", EAST, now=now)


def test_immediate_visibility_shows_saving_then_active() -> None:
    """In immediate mode the copy is listed at once as saving, active at the job's end."""
    world = make_world()
    src = add(world, 10, description="x")
    world.copy("acme", NORTH, src, body(name="mine", description="tok"), T0)
    (image,) = listed(world, T0)
    assert (image["status"], image["name"], image["__description"]) == ("saving", "mine", "tok")
    project = world.account("acme").project(EAST)
    assert project is not None
    assert image["owner"] == project.id
    assert image["__image_size"] == str(10 * GIB)
    assert listed(world, T0 + 26)[0]["status"] == "active"


def test_immediate_visibility_of_a_failed_job_is_killed() -> None:
    """A copy whose job fails stays behind as a killed image."""
    world = make_world(fail_rate=1.0)
    world.copy("acme", NORTH, add(world), body(), T0)
    assert listed(world, T0 + 100)[0]["status"] == "killed"


def test_at_end_visibility_hides_the_copy_until_success() -> None:
    """In at_end mode the copy appears only when the job succeeds (plus the lag)."""
    world = make_world(visibility="at_end", visibility_lag=3.0)
    job_id = world.copy("acme", NORTH, add(world, 10), body(), T0)
    end = world.jobs[job_id].end
    assert listed(world, end - 1) == []
    assert listed(world, end + 1) == []  # SUCCESS already, but the listing lags
    assert listed(world, end + 3.5)[0]["status"] == "active"


def test_at_end_visibility_of_a_failed_job_shows_nothing() -> None:
    """In at_end mode a failed copy never appears and takes no quota."""
    world = make_world(visibility="at_end", fail_rate=1.0)
    world.copy("acme", NORTH, add(world), body(), T0)
    assert listed(world, T0 + 100) == []
    assert world.quota("acme", EAST, now=T0 + 100)["used"] == 0


def test_visibility_lag_delays_an_immediate_copy() -> None:
    """The lag also applies to immediate mode."""
    world = make_world(visibility_lag=2.0)
    world.copy("acme", NORTH, add(world), body(), T0)
    assert listed(world, T0 + 1) == []
    assert len(listed(world, T0 + 2)) == 1


def test_a_copy_not_visible_yet_cannot_be_copied_again() -> None:
    """An in-progress copy is 'saving', so copying it onwards is IMG.0046."""
    world = make_world()
    world.copy("acme", NORTH, add(world), body(), T0)
    (image,) = listed(world, T0)
    payload = body(region=SOUTH, project_name=SOUTH)
    assert refusal(world, image["id"], payload, EAST) == "IMG.0046"


# -- listing ------------------------------------------------------------------------------


def test_listing_pages_in_id_order_with_a_marker() -> None:
    """Pages of `limit` in id order; the marker is the last id of the previous page."""
    world = make_world()
    ids = sorted(add(world, name=f"i{n}") for n in range(7))
    pages, marker = [], None
    while True:
        page = world.list_images("acme", NORTH, now=T0, limit=3, marker=marker)
        if not page:
            break
        pages.append([image["id"] for image in page])
        marker = page[-1]["id"]
    assert pages == [ids[0:3], ids[3:6], ids[6:7]]


def test_listing_filters_and_ownership() -> None:
    """Filters by name, id, status and type; another account's images never show."""
    world = make_world()
    web = add(world, name="web")
    add(world, name="db", status="queued")
    world.add_image("other", NORTH, {"name": "web"})
    names = [i["name"] for i in world.list_images("acme", NORTH, now=T0, filters={"name": "web"})]
    assert names == ["web"]
    by_id = world.list_images("acme", NORTH, now=T0, filters={"id": web})
    assert [i["id"] for i in by_id] == [web]
    queued = world.list_images("acme", NORTH, now=T0, filters={"status": "queued"})
    assert [i["name"] for i in queued] == ["db"]
    gold = world.list_images("acme", NORTH, now=T0, filters={"__imagetype": "gold"})
    assert gold == []


def test_images_carry_string_attributes_like_the_api() -> None:
    """Every __x attribute is a string; min_disk is an int."""
    world = make_world()
    add(world, 3, __whole_image=False)
    (image,) = world.list_images("acme", NORTH, now=T0)
    assert all(isinstance(v, str) for k, v in image.items() if k.startswith("__"))
    assert image["__whole_image"] == "false"
    assert isinstance(image["min_disk"], int)


# -- truth --------------------------------------------------------------------------------


def test_truth_reports_duplicates() -> None:
    """The same item submitted twice is a duplicate in truth."""
    world = make_world()
    image_id = add(world, 1)
    world.copy("acme", NORTH, image_id, body(name="a"), T0)
    world.copy("acme", NORTH, image_id, body(name="b"), T0)
    world.record_request(T0, "POST", "copy", "acme", 200)
    truth = world.truth(T0)
    key = f"acme/{image_id}/{EAST}"
    assert truth.duplicates == (key,)
    assert truth.submissions == {key: 2}
    assert truth.in_flight_now == {"acme": 2, "other": 0}
    assert truth.requests == {"copy": 1}
    assert truth.copies_total == 2
    assert {c.status for c in truth.copies} == {"INIT"}


def test_truth_round_trips_through_json() -> None:
    """Truth.to_dict is plain JSON, and Truth.from_dict reads it back unchanged."""
    world = make_world()
    image_id = add(world, 1)
    world.copy("acme", NORTH, image_id, body(name="a"), T0)
    world.note_auth_failure("AKACME", T0)
    truth = replace(world.truth(T0), faults={"copy": {"lost_reply": 1}})
    raw = json.loads(json.dumps(truth.to_dict()))
    assert Truth.from_dict(raw) == truth
    assert raw["copies"][0]["image_id"] == image_id
    assert raw["duplicates"] == []


def test_five_bad_signatures_lock_the_key_for_five_minutes() -> None:
    """The 5th consecutive failure locks the key; success in between resets the count."""
    world = make_world()
    for _ in range(4):
        world.note_auth_failure("AKACME", T0)
    world.note_auth_success("AKACME")
    for _ in range(4):
        world.note_auth_failure("AKACME", T0)
    assert not world.is_locked("AKACME", T0)
    world.note_auth_failure("AKACME", T0)
    assert world.is_locked("AKACME", T0 + 299)
    assert not world.is_locked("AKACME", T0 + 301)
    assert world.truth(T0).auth_failures == {"AKACME": 9}
    assert world.truth(T0).locked_keys == ("AKACME",)


# -- scenarios ----------------------------------------------------------------------------


def test_scenario_round_trips_through_a_file(tmp_path: Path) -> None:
    """dump then load gives a world with the same accounts, images and faults."""
    scenario, _ = generate_demo_scenario(3)
    path = tmp_path / "scenario.json"
    dump_scenario(scenario, path)
    world, faults = load_scenario(path)
    assert set(world.accounts) == set(DEMO_ACCOUNTS)
    assert sum(len(images) for images in world.images.values()) == len(scenario["images"])
    assert faults is not None
    assert faults.to_json()["rates"] == scenario["faults"]["rates"]


def test_scenario_errors_name_the_place(tmp_path: Path) -> None:
    """A broken scenario is refused with where and why."""
    with pytest.raises(ScenarioError, match=r"accounts\[0\]: 'secret_key' is required"):
        build_world({"accounts": [{"name": "a", "domain_id": "d", "access_key": "k"}]})
    with pytest.raises(ScenarioError, match="unknown world parameters: speed"):
        build_world({"params": {"speed": 2}, "accounts": [{}]})
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"bad\.json"):
        load_scenario(bad)


def test_scenario_accepts_short_key_names_and_sub_projects() -> None:
    """ak/sk, explicit project ids, sub-projects and quotas are honoured."""
    world, faults = build_world(
        {
            "params": {"regions": [NORTH, EAST]},
            "accounts": [
                {
                    "name": "a",
                    "domain_id": "d" * 32,
                    "ak": "AK",
                    "sk": "SK",
                    "project_ids": {NORTH: "1" * 32},
                    "sub_projects": [{"region": NORTH, "name": "cn-north-4_dev", "id": "2" * 32}],
                    "quotas": {EAST: 3},
                }
            ],
            "images": [{"account": "a", "region": NORTH, "image": {"id": "i-1", "name": "x"}}],
        }
    )
    account = world.account("a")
    assert faults is None
    assert account.project(NORTH) == account.project_by_id("1" * 32)
    assert account.project(NORTH, "cn-north-4_dev") is not None
    assert world.quota("a", EAST, now=T0) == {"used": 0, "quota": 3}


def test_demo_scenario_shape() -> None:
    """3 accounts, 4 real regions, >= 60 images, ~20 good rows each, one of each bad kind."""
    scenario, rows = generate_demo_scenario(0)
    world, _ = build_world(scenario)
    assert set(scenario["params"]["regions"]) == set(DEMO_REGIONS)
    assert len(scenario["images"]) >= 60
    assert all(set(DEMO_COLUMNS) <= set(row) for row in rows)
    good = [row for row in rows if row["expect"] == "succeeded"]
    assert {row["tenant"] for row in good} == set(DEMO_ACCOUNTS)
    assert all(sum(r["tenant"] == a for r in good) >= 18 for a in DEMO_ACCOUNTS)
    assert sum(row["expect"] == "rejected" for row in rows) == 8
    sizes = [int(i["image"]["__image_size"]) / GIB for i in scenario["images"]]
    assert max(sizes) <= 300
    assert sorted(sizes)[len(sizes) // 2] < 30  # skewed small
    assert generate_demo_scenario(0) == (scenario, rows)  # deterministic
    assert world.accounts["alpha"].access_key != world.accounts["beta"].access_key


def test_demo_rows_do_what_they_expect() -> None:
    """Every good row copies; every bad row is refused by the cloud or by the tool's rules."""
    scenario, rows = generate_demo_scenario(1)
    world, _ = build_world(scenario)
    now, refused_by_cloud = T0, 0
    for row in rows:
        now += 60.0  # every earlier job has finished: the cap never interferes
        payload = body(
            name=row["name"] or "copied",
            region=row["target_region"],
            description=row["description"],
        )
        payload["project_name"] = row["target_region"]
        try:
            world.copy(row["tenant"], row["source_region"], row["image_id"], payload, now)
        except SimError:
            assert row["expect"] == "rejected", row
            refused_by_cloud += 1
        else:
            assert row["expect"] == "succeeded" or row["image_id"] in _conflicts(world, row), row
    assert refused_by_cloud == 7  # the name conflict is the tool's to catch


def _conflicts(world: World, row: dict[str, str]) -> set[str]:
    source = world.images[row["source_region"]][row["image_id"]]
    target = world.list_images(row["tenant"], row["target_region"], now=T0)
    return {row["image_id"]} if any(i["name"] == source["name"] for i in target) else set()


def test_demo_fits_its_time_budget() -> None:
    """Per tenant, max(sum of durations / 5, longest) is 12-25 s: a 20-30 s demo."""
    scenario, rows = generate_demo_scenario(0)
    world, _ = build_world(scenario)
    p = world.params
    for account in DEMO_ACCOUNTS:
        durations = [
            p.init_seconds
            + p.fixed_seconds
            + int(world.images[r["source_region"]][r["image_id"]]["__image_size"])
            / GIB
            * p.seconds_per_gib
            for r in rows
            if r["tenant"] == account and r["expect"] == "succeeded"
        ]
        assert 12.0 <= max(sum(durations) / 5, max(durations)) <= 25.0


def test_demo_rows_write_as_csv(tmp_path: Path) -> None:
    """The rows write as a CSV migration list with the documented header."""
    _, rows = generate_demo_scenario(0)
    path = tmp_path / "list.csv"
    write_rows_csv(rows, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(DEMO_COLUMNS)
    assert len(lines) == len(rows) + 1
