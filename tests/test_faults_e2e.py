"""Faults the cloud throws at a run: lost replies, visibility lag, HTTP errors, busy slots.

Lost replies, the job deadline and busy slots run the CLI's ``main`` in process on virtual time
against the in-memory cloud, which carries out the same faults on the same world, judged by its
ground truth. The HTTP faults run the real CLI in a subprocess against the simulator on
127.0.0.1 and judge on its ground truth (``/_sim/truth``) and its per-request log
(``/_sim/requests``: arrival time, method, kind, account, status, path and injected fault of
every request). The
in-process tests at the end drive ``ImsClient`` against the simulator app for the per-call
guarantees (every endpoint kind, every fault, timeouts, Retry-After) that a whole run cannot
isolate.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest

from orchestrator.clock import RealClock
from orchestrator.config import Config, Endpoints, TenantConfig, Timing
from orchestrator.core.cloud import CloudError, CopyRequest, ErrorKind
from orchestrator.core.credentials import Credentials
from orchestrator.core.units import GIB
from orchestrator.ims.client import ImsClient
from orchestrator.ims.ratelimit import RateLimits
from orchestrator.ims.wire import open_transport
from orchestrator.simulator.app import build_app, serve
from orchestrator.simulator.faults import KINDS, FaultPlan
from orchestrator.simulator.harness import Cloud
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.truth import CopyRecord
from orchestrator.simulator.world import World
from tests.inprocess import Completed, LocalCloud

CAP = 5
FAILED_STATUSES = frozenset({0, 429, 500, 503})


class Request(NamedTuple):
    """One line of the simulator's request log."""

    time: float
    method: str
    kind: str
    account: str | None
    status: int
    path: str
    fault: str


def request_log(cloud: Cloud) -> list[Request]:
    return [Request(*entry) for entry in cloud.admin("/_sim/requests")["requests"]]


def checkpoint_items(cloud: Cloud) -> dict[str, dict[str, Any]]:
    from orchestrator.state.checkpoint import read_snapshot

    snap = read_snapshot(cloud.state_dir)
    assert snap is not None
    return dict(snap["items"])


def in_flight_peak(copies: Sequence[CopyRecord], after: float) -> int:
    """The most copies in INIT/RUNNING at once from ``after`` on (intervals [begin, end))."""
    edges = []
    for copy in copies:
        begin, end = max(copy.begin, after), copy.end
        if begin < end:
            edges += [(begin, 1), (end, -1)]
    peak = current = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # ends before begins at a tie
        current += step
        peak = max(peak, current)
    return peak


# -- 3. lost replies and visibility lag ------------------------------------------------------

LOST_REPLIES = {
    "seed": 11,
    "rates": {"copy": {"lost_reply": 0.15}},
    "next": {"copy": ["lost_reply", "lost_reply", "lost_reply"]},  # at least 3, early
}


def run_with_lost_replies(
    cloud: LocalCloud, visibility: str, lag: float, settle: float
) -> Completed:
    """Two tenants of 8 rows, the first 3 copy POSTs and 15% of the others losing their reply."""
    cloud.params.update(visibility=visibility, visibility_lag=lag)
    cloud.timing.update(settle=settle, request_timeout=5)  # only the injected replies get lost
    cloud.faults = LOST_REPLIES
    cloud.populate(tenants=2, per_tenant=8, seed=3)
    cloud.start()
    return cloud.run()


def lost_reply_violations(cloud: LocalCloud, exit_code: int) -> list[str]:
    """What is wrong after a run with lost replies (the pass condition is an empty list)."""
    truth = cloud.truth()
    items = checkpoint_items(cloud)
    wrong = []
    if exit_code != 0:
        wrong.append(f"exit {exit_code}")
    if truth.duplicates:
        wrong.append(f"submitted twice: {truth.duplicates}")
    if sorted(truth.submissions.values()) != [1] * len(cloud.rows):
        wrong.append(f"submissions are not one per item: {truth.submissions}")
    adopted = sorted(key for key, item in items.items() if item["detail"] == "adopted")
    if len(adopted) != truth.lost_replies:
        wrong.append(f"{truth.lost_replies} lost replies but {len(adopted)} items adopted")
    if truth.rejections.get("IMG.0060"):
        wrong.append(f"the tool overcommitted: {truth.rejections['IMG.0060']} x IMG.0060")
    if max(truth.max_in_flight.values()) > CAP:
        wrong.append(f"more than {CAP} in flight: {truth.max_in_flight}")
    return wrong


@pytest.mark.parametrize(
    ("visibility", "lag", "settle"),
    [("immediate", 0.5, 2.0), ("at_end", 0.2, 3.0)],
    ids=["shown-after-lag", "shown-at-end"],
)
def test_lost_replies_are_adopted_never_resent(
    local_cloud: LocalCloud, visibility: str, lag: float, settle: float
) -> None:
    """POSTs carried out whose reply is lost (>= 5%) are found by token and adopted, never
    re-sent, while their slot stays held: 0 duplicates, no IMG.0060 from the tool itself."""
    cloud = local_cloud
    done = run_with_lost_replies(cloud, visibility, lag, settle)
    assert lost_reply_violations(cloud, done.returncode) == [], done.stderr
    truth = cloud.truth()
    posts = truth.requests["copy"]
    assert truth.lost_replies >= max(3, 0.05 * posts), (truth.lost_replies, posts)


def test_without_a_settle_window_the_same_judge_sees_duplicates(local_cloud: LocalCloud) -> None:
    """The lost-reply judge can see the bug: with settle 0.001 s (the smallest the config takes)
    and copies that show only at the end, the run re-sends copies that exist."""
    cloud = local_cloud
    done = run_with_lost_replies(cloud, "at_end", 0.2, 0.001)
    wrong = lost_reply_violations(cloud, done.returncode)
    assert any(problem.startswith("submitted twice") for problem in wrong), wrong
    assert cloud.truth().duplicates


def test_job_past_its_deadline_is_adopted_by_retry_failed(local_cloud: LocalCloud) -> None:
    """A job that outlives job_deadline fails the item; --retry-failed adopts the old job
    (still running, or finished meanwhile) instead of copying again: one submission each."""
    cloud = local_cloud
    cloud.params["init_seconds"] = 1.0  # no progress to learn from: polls back off from 0.05 s
    cloud.account("t0")
    still_running = cloud.row("t0", 235)  # ends ~6 s after its submission
    finished_meanwhile = cloud.row("t0", 1)  # ends ~1.3 s after its submission
    cloud.timing["job_deadline"] = 0.3
    cloud.start()
    first = cloud.run()
    assert first.returncode == 1, first.stderr
    items = checkpoint_items(cloud)
    assert {item["error_code"] for item in items.values()} == {"JOB_DEADLINE"}
    assert "--retry-failed adopts it" in first.stdout
    while cloud.truth().jobs.get("SUCCESS", 0) < 1:
        cloud.clock.advance(0.05)  # time between two cron runs, on the virtual clock
    cloud.timing["job_deadline"] = 60
    cloud.write_config()
    retry_started = cloud.truth().now
    again = cloud.run("--retry-failed")
    assert again.returncode == 0, again.stderr
    truth = cloud.truth()
    assert truth.copies_total == 2
    assert truth.duplicates == ()
    assert set(truth.submissions.values()) == {1}
    ends = {copy.image_id: copy.end for copy in truth.copies}
    assert ends[finished_meanwhile] < retry_started < ends[still_running]
    items = checkpoint_items(cloud)
    for image_id in (still_running, finished_meanwhile):
        (item,) = (i for i in items.values() if i["row"]["image_id"] == image_id)
        assert (item["phase"], item["attempt"]) == ("succeeded", 2)
    events = [
        json.loads(line) for line in (cloud.state_dir / "events.jsonl").read_text().splitlines()
    ]
    retried = [e for e in events if e["event"] == "item.retry"]
    assert [e["detail"] for e in retried] == ["retry: adopting the old job"] * 2


# -- 4. HTTP faults on every endpoint ----------------------------------------------------------

RETRY_AFTER = 0.4
HANG_SECONDS = 60.0
RATES = {"500": 0.02, "503": 0.02, "429": 0.02, "reset": 0.02, "hang": 0.01}  # per request
HTTP_FAULTS = {
    "seed": 8,
    "retry_after": RETRY_AFTER,
    "hang_seconds": HANG_SECONDS,
    "rates": dict.fromkeys(KINDS, RATES),
    # Every kind the run uses meets a hang and a 429 early, whatever the draws.
    "next": {
        "iam": ["hang", "429"],
        "list": ["429", "hang", "reset"],
        "job": ["429", "hang", "503"],
        "copy": ["429", "hang"],
    },
}
RETRY_SHARE_MAX = 0.25  # retries / requests; ~9% drawn + 10 scripted faults make ~15% fail


def previous_by_call(log: list[Request]) -> dict[int, int]:
    """For each request, the index of the one before it to the same call (account, method,
    path and query), where there is one."""
    last: dict[tuple[str | None, str, str], int] = {}
    previous = {}
    for index, request in enumerate(log):
        key = (request.account, request.method, request.path)
        if key in last:
            previous[index] = last[key]
        last[key] = index
    return previous


@pytest.mark.e2e
def test_http_faults_on_every_endpoint(cloud: Cloud) -> None:
    """5xx, 429 with Retry-After, resets and hangs on every endpoint: every item succeeds, no
    call comes back before its Retry-After, no call waits past its timeout, and retries stay
    under 25% of requests."""
    cloud.timing.update(request_timeout=1.0, backoff_max=0.5)
    cloud.faults = HTTP_FAULTS
    cloud.populate(tenants=2, per_tenant=8, seed=4)
    cloud.start()
    started = time.monotonic()
    done = cloud.run()
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    truth = cloud.truth()
    assert truth.duplicates == ()
    assert set(cloud.item_states().values()) == {"succeeded"}
    assert max(truth.max_in_flight.values()) <= CAP
    assert elapsed < HANG_SECONDS / 2  # no call waited for a hung answer

    log = request_log(cloud)
    seen = defaultdict(set)
    for request in log:
        if request.fault:
            seen[request.kind].add(request.fault)
    for kind in ("iam", "list", "job", "copy"):  # the tool never asks for the quota
        assert {"429", "hang"} <= seen[kind], (kind, seen[kind])
    assert set().union(*seen.values()) >= {"500", "503", "429", "reset", "hang"}

    previous = previous_by_call(log)
    after: dict[int, int] = {before: index for index, before in previous.items()}
    throttled = [i for i, r in enumerate(log) if r.status == 429]
    assert len(throttled) >= 4
    for index in throttled:
        if index in after:  # the same call again: not before Retry-After has passed
            gap = log[after[index]].time - log[index].time
            assert gap >= RETRY_AFTER - 0.005, (log[index], log[after[index]])

    timeout, margin = cloud.timing["request_timeout"], 2.0  # far below the 60 s hang
    names = {image["image"]["id"]: image["image"]["name"] for image in cloud.images}
    hung = [i for i, r in enumerate(log) if r.fault == "hang"]
    for index in hung:
        request = log[index]
        if request.method == "GET":  # retried once the client gave up on it
            bound = timeout + cloud.timing["backoff_max"] + margin
            assert index in after, request
            assert log[after[index]].time - request.time <= bound, (request, log[after[index]])
        else:  # the unknown POST is reconciled: its copy is looked for by name
            image_id = request.path.split("/")[-2]
            look = next(
                r
                for r in log[index + 1 :]
                if r.kind == "list" and r.account == request.account
                and f"name={names[image_id]}" in r.path
            )  # fmt: skip
            assert look.time - request.time <= timeout + margin, (request, look)

    failed = sum(r.status in FAILED_STATUSES for r in log)
    retries = sum(log[before].status in FAILED_STATUSES for before in previous.values())
    assert retries <= failed
    assert retries / len(log) <= RETRY_SHARE_MAX, (retries, len(log))


# -- 5. slots used by someone else -------------------------------------------------------------


def test_slots_held_outside_the_tool_are_back_pressure(local_cloud: LocalCloud) -> None:
    """Copies started outside the tool hold 3 of 5 slots: the tool backs off on IMG.0060, fails
    nothing, never has the tenant above 5, and fills all 5 slots again once they are free."""
    cloud = local_cloud
    cloud.account("t0")
    for _ in range(10):
        cloud.row("t0", 40)  # ~1.1 s each
    cloud.start()
    assert cloud.world is not None
    outside = cloud.world.occupy("t0", 3, 120, cloud.clock.now())
    assert len(outside) == 3
    freed: list[float] = []

    def free_the_slots(world: World, now: float) -> None:
        """Once the tool is refused and works on in the 2 free slots, the outside copies end."""
        truth = world.truth(now)
        if freed or not truth.rejections.get("IMG.0060") or truth.jobs.get("SUCCESS", 0) < 2:
            return
        freed.append(now)  # before the first slot frees: later copies may use it
        for job_id in outside:
            world.fail_job(job_id, now)

    cloud.watch = free_the_slots
    done = cloud.run()
    assert done.returncode == 0, done.stderr
    (freed_at,) = freed
    truth = cloud.truth()
    assert truth.rejections.get("IMG.0060", 0) >= 1
    assert set(cloud.item_states().values()) == {"succeeded"}
    assert truth.duplicates == ()
    assert truth.max_in_flight["t0"] <= CAP
    ours = truth.copies
    assert in_flight_peak([c for c in ours if c.begin < freed_at], after=0.0) <= CAP - 3
    assert in_flight_peak(ours, after=freed_at) == CAP  # all 5 slots used again once free


# -- 4, per call: every endpoint kind x every fault, in process -------------------------------

AK, SK = "AKFAULTS000000000000", "SKFAULTS" + "s" * 32
NORTH, EAST = "cn-north-4", "cn-east-3"
CALL_TIMEOUT = 0.3
CALL_BACKOFF_MAX = 0.2
CALL_RETRY_AFTER = 0.25


@dataclass
class Harness:
    world: World
    faults: FaultPlan
    client: ImsClient
    image_id: str
    job_id: str
    sleeps: list[float] = field(default_factory=list)

    def call(self, kind: str) -> Callable[[], Awaitable[object]]:
        client = self.client
        copy = CopyRequest("copied", "[ims-migrate:0]", EAST, EAST, "ims_admin_agency")
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "iam": lambda: client.probe(NORTH),
            "list": lambda: client.list_images(NORTH),
            "job": lambda: client.get_job(NORTH, self.job_id),
            "quota": lambda: client.get_quota(EAST),
            "copy": lambda: client.copy_image(NORTH, self.image_id, copy),
            "tags": lambda: client.image_tags(NORTH, self.image_id),
            "tag": lambda: client.add_image_tags(NORTH, self.image_id, {"k": "v"}),
            "patch": lambda: client.update_image(NORTH, self.image_id, {"min_ram": 1024}),
            "members": lambda: client.image_members(NORTH, self.image_id),
            "delete": lambda: client.delete_image(NORTH, self.image_id),
        }
        return calls[kind]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    world = World(WorldParams(regions=(NORTH, EAST), seconds_per_gib=1000.0))
    world.add_account("acme", "d" * 32, AK, SK)
    image = world.add_image("acme", NORTH, {"name": "web", "__image_size": str(GIB)})
    other = world.add_image("acme", NORTH, {"name": "db", "__image_size": str(GIB)})
    job_id = world.copy("acme", NORTH, other["id"], {
        "name": "db", "region": EAST, "project_name": EAST, "agency_name": "a",
    }, time.time())  # fmt: skip
    faults = FaultPlan(seed=1, retry_after=CALL_RETRY_AFTER, hang_seconds=30.0)
    runner, port = await serve(build_app(world, faults))
    config = Config(
        endpoints=Endpoints(
            ims=f"http://127.0.0.1:{port}/ims/{{region}}", iam=f"http://127.0.0.1:{port}/iam"
        ),
        timing=Timing(request_timeout=CALL_TIMEOUT, backoff_max=CALL_BACKOFF_MAX),
        requests_per_second=0,
    )
    clock = RealClock()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await clock.sleep(seconds)

    try:
        async with open_transport(config) as transport:
            client = ImsClient(
                transport,
                TenantConfig("acme"),
                Credentials(AK, SK),
                config,
                RateLimits(0, clock),
                clock,
                retry_sleep=sleep,
                backoff_base=0.05,
                rng=random.Random(7),
            )
            await client.probe(NORTH)  # project ids known: each call below is one request
            await client.probe(EAST)
            yield Harness(world, faults, client, str(image["id"]), job_id, sleeps)
    finally:
        await runner.cleanup()


FAULTS = ("500", "503", "429", "reset", "hang")
MUTATING = ("copy", "tag", "patch", "delete")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", FAULTS)
async def test_every_call_ends_within_its_timeout_and_honours_retry_after(
    harness: Harness, kind: str, fault: str
) -> None:
    """Each endpoint kind meeting each fault: a read is retried and succeeds; the copy POST is
    retried only after a 429 (else UNKNOWN, never re-sent); no call outlasts its timeout plus
    the back-off, and a 429 is followed by a wait of at least its Retry-After."""
    harness.faults.enqueue(kind, fault)
    before = len(harness.world.request_log)
    started = time.monotonic()
    outcome: object = None
    try:
        outcome = await harness.call(kind)()
    except CloudError as error:
        outcome = error
    elapsed = time.monotonic() - started
    sent = harness.world.request_log[before:]
    # The transport never re-sends on its own, not even an idempotent DELETE.
    if kind in MUTATING and fault != "429":
        assert isinstance(outcome, CloudError)
        assert outcome.kind == ErrorKind.UNKNOWN
        assert len(sent) == 1  # a mutating call is never sent again by the client
        assert harness.world.submissions[f"acme/{harness.image_id}/{EAST}"] == 0
    else:
        assert not isinstance(outcome, CloudError), outcome
        assert len(sent) == 2, sent  # the failed request, then the one that succeeded
        # ... sent again by the client, after a sleep.
        assert len(harness.sleeps) == 1
    waited = max(harness.sleeps, default=0.0)
    if fault == "429":
        assert harness.sleeps[0] >= CALL_RETRY_AFTER
        assert sent[1].time - sent[0].time >= CALL_RETRY_AFTER - 0.005
    bound = (CALL_TIMEOUT if fault == "hang" else 0.0) + waited + 0.5
    assert elapsed <= bound, (elapsed, bound)


async def test_a_hung_call_gives_up_within_the_attempt_budget(harness: Harness) -> None:
    """A read that hangs on every attempt ends with TRANSIENT after 6 timeouts and their
    back-offs, not after the server's 30 s hang."""
    harness.faults.enqueue("job", *["hang"] * 6)
    started = time.monotonic()
    with pytest.raises(CloudError) as caught:
        await harness.client.get_job(NORTH, harness.job_id)
    elapsed = time.monotonic() - started
    assert caught.value.kind == ErrorKind.TRANSIENT
    assert len(harness.sleeps) == 5
    assert all(s <= CALL_BACKOFF_MAX for s in harness.sleeps)
    assert elapsed <= 6 * CALL_TIMEOUT + sum(harness.sleeps) + 1.0
