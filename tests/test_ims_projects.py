"""ImsClient's projects: looked up once in IAM per name, or configured; the probe of a tenant's
credentials with and without IAM. Through the mock transport to ``tests/fake_ims.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import anyio
import pytest

from orchestrator.core.cloud import CloudError, ErrorKind
from tests.fake_ims import (
    DOMAIN_ID,
    IMAGES,
    PROJECT_ID,
    PROJECTS,
    QUOTA,
    QUOTA_OK,
    REGION,
    START,
    Answer,
    FakeCloud,
    Harness,
    answer,
    build_harness,
)
from tests.mock_transport import MockTransport
from tests.virtual_clock import InstantClock, VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return InstantClock(START)


@pytest.fixture
def cloud(clock: VirtualClock) -> Iterator[FakeCloud]:
    fake = FakeCloud(clock)
    yield fake
    assert fake.problems == [], "requests the gateway would have rejected"


@pytest.fixture
def make(cloud: FakeCloud, clock: VirtualClock) -> Callable[..., Harness]:
    """Clients whose requests go through the mock transport to ``cloud``."""
    return partial(build_harness, cloud, clock, MockTransport(cloud.handle))


# -- projects (IAM) and probe --------------------------------------------------------------------


def projects(*ids: str) -> Answer:
    found = [{"id": i, "name": REGION, "domain_id": DOMAIN_ID, "enabled": True} for i in ids]
    return answer(200, {"projects": found})


async def test_project_id_is_looked_up_once_in_iam(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """Without configured ids, IAM is asked once (even by concurrent calls), unsigned by project."""
    cloud.project_ids[REGION] = "f" * 32
    cloud.on("GET", PROJECTS, projects("f" * 32))
    cloud.on("GET", QUOTA, QUOTA_OK)
    client = make(project_ids={}).client
    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(client.get_quota, REGION)
    await client.get_quota(REGION)
    [lookup] = cloud.requests("GET", PROJECTS)
    assert lookup.query == f"name={REGION}"
    assert "X-Project-Id" not in lookup.headers
    assert len(cloud.requests("GET", QUOTA)) == 6
    assert client.domain_id == DOMAIN_ID


@pytest.mark.parametrize("found", [(), ("a" * 32, "b" * 32)], ids=["none", "two"])
async def test_ambiguous_project_says_what_to_configure(
    cloud: FakeCloud, make: Callable[..., Harness], found: tuple[str, ...]
) -> None:
    """0 or 2 projects of that name: PERMANENT, naming project_ids in [tenants.acme]."""
    cloud.on("GET", PROJECTS, projects(*found))
    harness = make(project_ids={})
    with pytest.raises(CloudError) as caught:
        await harness.client.get_quota(REGION)
    assert caught.value.kind is ErrorKind.PERMANENT
    assert "project_ids" in caught.value.message
    assert "[tenants.acme]" in caught.value.message
    assert cloud.requests("GET", QUOTA) == []


async def test_probe_with_configured_projects_asks_no_iam(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """The region's project id configured: one IMS listing checks the keys, IAM is not asked."""
    cloud.on("GET", PROJECTS, projects(PROJECT_ID))
    cloud.on("GET", IMAGES, answer(200, {"images": []}))
    assert await make().client.probe(REGION) == ""
    assert cloud.requests("GET", PROJECTS) == []
    assert [s.query for s in cloud.requests("GET", IMAGES)] == ["limit=1"]


async def test_probe_without_configured_project_asks_iam_for_the_domain(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """No project id configured: the IAM look-up checks the keys and names the account."""
    cloud.on("GET", PROJECTS, projects(PROJECT_ID))
    assert await make(project_ids={}).client.probe(REGION) == DOMAIN_ID
    assert len(cloud.requests("GET", PROJECTS)) == 1


async def test_iam_permission_refusal_names_the_permission(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """IAM 403 on the project look-up: AUTH, naming iam:projects:list and project_ids."""
    body = {"error": {"code": 403, "message": "not authorized", "title": "Forbidden"}}
    cloud.on("GET", PROJECTS, answer(403, body))
    with pytest.raises(CloudError) as caught:
        await make(project_ids={}).client.probe(REGION)
    assert caught.value.kind is ErrorKind.AUTH
    assert "iam:projects:list" in caught.value.message
    assert "project_ids" in caught.value.message


async def test_probe_without_iam_and_without_ids_fails(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """IAM missing and no configured id: the lookup's error is raised."""
    with pytest.raises(CloudError) as caught:
        await make(project_ids={}).client.probe(REGION)
    assert caught.value.kind is ErrorKind.NOT_FOUND
    assert cloud.requests("GET", IMAGES) == []


async def test_probe_refused_with_a_bare_400_says_the_status_once(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A probe answered 400 without an error body: "HTTP 400", not "HTTP 400 HTTP 400"."""
    cloud.on("GET", IMAGES, answer(400))
    with pytest.raises(CloudError) as caught:
        await make().client.probe(REGION)
    assert caught.value.kind is ErrorKind.PERMANENT
    assert str(caught.value) == "HTTP 400"
