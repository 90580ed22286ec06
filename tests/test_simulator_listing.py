"""The simulator answers the listing filters of ``GET /v2/cloudimages`` as the API documents
them (name exact, __imagetype, created_at operators, enterprise project, OS type, status, tag,
limit/marker)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.simulator.images import SimError
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.world import World

REGION = "cn-north-4"
NOW = 1_800_000_000.0


@pytest.fixture
def world() -> World:
    world = World(WorldParams())
    world.add_account("t0", "dom-t0", "AK0", "SK0")
    images: list[dict[str, Any]] = [
        {"name": "web", "created_at": "2026-01-01T00:00:00Z", "tags": ["env.prod"],
         "enterprise_project_id": "ep-1", "__os_type": "Linux"},
        {"name": "web-2", "created_at": "2026-02-01T00:00:00Z", "tags": ["env.dev"],
         "__os_type": "Windows", "status": "queued"},
        {"name": "db", "created_at": "2026-03-01T00:00:00Z", "__whole_image": True},
    ]  # fmt: skip
    for attrs in images:
        world.add_image("t0", REGION, attrs)
    return world


def names(world: World, **filters: str) -> list[str]:
    found = world.list_images("t0", REGION, now=NOW, filters=filters)
    return sorted(image["name"] for image in found)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"name": "web"}, ["web"]),
        ({"__imagetype": "private"}, ["db", "web", "web-2"]),
        ({"__imagetype": "gold"}, []),
        ({"created_at": "gt:2026-01-01T00:00:00Z"}, ["db", "web-2"]),
        ({"created_at": "gte:2026-01-01T00:00:00Z"}, ["db", "web", "web-2"]),
        ({"created_at": "lt:2026-02-01T00:00:00Z"}, ["web"]),
        ({"created_at": "lte:2026-02-01T00:00:00Z"}, ["web", "web-2"]),
        ({"created_at": "eq:2026-03-01T00:00:00Z"}, ["db"]),
        ({"created_at": "neq:2026-03-01T00:00:00Z"}, ["web", "web-2"]),
        ({"enterprise_project_id": "ep-1"}, ["web"]),
        ({"enterprise_project_id": "0"}, ["db", "web-2"]),
        ({"enterprise_project_id": "all_granted_eps"}, ["db", "web", "web-2"]),
        ({"__os_type": "Windows"}, ["web-2"]),
        ({"status": "active"}, ["db", "web"]),
        ({"tag": "env.prod"}, ["web"]),
        ({"__whole_image": "true"}, ["db"]),
        ({"tag": "env.prod", "__os_type": "Windows"}, []),
    ],
)
def test_a_filter_keeps_what_the_api_documents(
    world: World, filters: dict[str, str], expected: list[str]
) -> None:
    """Each documented filter, alone or combined with AND."""
    assert names(world, **filters) == expected


def test_a_malformed_time_filter_is_refused(world: World) -> None:
    """An operator the API lacks: 400, as a bad query would be."""
    with pytest.raises(SimError) as refused:
        names(world, created_at="after:2026-01-01T00:00:00Z")
    assert refused.value.status == 400


def test_pages_follow_the_marker(world: World) -> None:
    """limit 2 and the last id as marker: two pages, every image once, in id order."""
    first = world.list_images("t0", REGION, now=NOW, limit=2)
    rest = world.list_images("t0", REGION, now=NOW, limit=2, marker=first[-1]["id"])
    ids = [image["id"] for image in first + rest]
    assert len(first) == 2
    assert len(rest) == 1
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
