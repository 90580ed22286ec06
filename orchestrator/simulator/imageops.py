"""The world's calls after a copy: tags, PATCH, members, DELETE; and how a copy may go wrong.

A mixin of :class:`~orchestrator.simulator.world.World` (kept apart so that the world's copy
logic stays readable). Shapes as docs/ims-api.md §10:

    GET    /v2/{project_id}/images/{image_id}/tags          {"tags": [{"key", "value"}]}
    POST   /v2/{project_id}/images/{image_id}/tags/action   {"action": "create"|"delete",
                                                              "tags": [{"key", "value"}]}
    PATCH  /v2/cloudimages/{image_id}                       [{"op": "replace",
                                                              "path": "/min_ram", "value": N}]
    GET    /v1/{project_id}/cloudimages/{image_id}/members  {"members": [...], "page_info": {}}
    DELETE /v2/images/{image_id}                            204

An image keeps its tags in ``tags`` as the listing shows them (``"key.value"`` strings; a key
is read up to its first dot). The simulator's choices: an unknown or foreign image is 404
``IMG.0027``; a call the account may not make (:meth:`ImageOps.deny`) is 403 ``IMS.0211``
"Policy doesn't allow ... to be performed."; a bad body is 400 ``IMG.0001``.

A copy does not keep its source's tags nor ``min_ram``/``max_ram`` (what Terraform assumes);
:meth:`ImageOps.differ_copies` makes the copies of one source differ from it (to test a
verification), and ``WorldParams.leave_killed`` leaves a ``killed`` image behind a failed job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.simulator.images import SimError, bad

if TYPE_CHECKING:
    from orchestrator.simulator.accounts import Project
    from orchestrator.simulator.jobs import SimJob

# The real IAM actions of these calls (docs/ims-api.md §10): there is no separate tag action,
# so one missing ims:images:update refuses both adding tags and the PATCH.
LIST = "ims:images:list"  # GET .../images/{id}/tags (and the listing)
UPDATE = "ims:images:update"  # POST .../images/{id}/tags/action; PATCH /v2/cloudimages/{id}
GET = "ims:images:get"  # GET /v1/{project_id}/cloudimages/{id}/members
DELETE = "ims:images:delete"  # DELETE /v2/images/{id}
PATCHABLE = frozenset({"/min_ram", "/max_ram", "/name", "/__description"})


def tags_of(image: Mapping[str, Any]) -> dict[str, str]:
    """``["env.prod", ...]`` -> ``{"env": "prod"}``."""
    out: dict[str, str] = {}
    for tag in image.get("tags") or []:
        key, _, value = str(tag).partition(".")
        out[key] = value
    return out


def _tag_list(body: object) -> list[tuple[str, str]]:
    tags = body.get("tags") if isinstance(body, Mapping) else None
    if not isinstance(tags, list) or not tags:
        raise bad("IMG.0001", "The request message format is invalid: tags is mandatory.")
    out = []
    for tag in tags:
        if not isinstance(tag, Mapping) or not isinstance(tag.get("key"), str) or not tag["key"]:
            raise bad("IMG.0001", "The request message format is invalid: a tag needs a key.")
        value = tag.get("value", "")
        if not isinstance(value, str):
            raise bad("IMG.0001", "The request message format is invalid: a value is no string.")
        out.append((tag["key"], value))
    return out


class ImageOps:
    """Post-copy calls over the world's images (see the module's docstring)."""

    if TYPE_CHECKING:
        images: dict[str, dict[str, dict[str, Any]]]
        _owned: dict[str, set[str]]
        _copies: dict[str, SimJob]

        def resolve_project(self, account: str, region: str, project_id: str | None) -> Project: ...

        def _render(self, image: dict[str, Any], now: float) -> dict[str, Any] | None: ...

    def _init_image_ops(self) -> None:
        self.denied: set[tuple[str, str]] = set()  # (account, action) refused with 403
        self.members: dict[str, list[str]] = {}  # image id -> project ids it is shared with
        self.deleted: list[str] = []  # ids of images deleted, in order
        self._differ: dict[str, dict[str, Any]] = {}  # source id -> attrs its copies get

    # -- set-up ---------------------------------------------------------------------------

    def deny(self, account: str, action: str) -> None:
        """Refuse the IAM ``action`` (``ims:images:update``...) to the account: 403."""
        self.denied.add((account, action))

    def deny_only(self, account: str, actions: Iterable[str]) -> None:
        """Refuse exactly ``actions`` to the account (none: grant them all again)."""
        self.denied = {(who, action) for who, action in self.denied if who != account}
        self.denied.update((account, action) for action in actions)

    def share(self, image_id: str, project_ids: list[str]) -> None:
        self.members[image_id] = list(project_ids)

    def differ_copies(self, source_id: str, attrs: Mapping[str, Any]) -> None:
        """Copies of ``source_id`` made from now on get ``attrs`` (e.g. another checksum)."""
        self._differ[source_id] = dict(attrs)

    def copy_attrs(self, source: Mapping[str, Any]) -> dict[str, Any]:
        """What a copy keeps of ``source``: not its tags nor its RAM limits; plus any
        difference asked by :meth:`differ_copies`."""
        copied = dict(source)
        copied["tags"] = []
        copied["min_ram"] = 0
        copied.pop("max_ram", None)
        copied.update(self._differ.get(str(source.get("id")), {}))
        return copied

    # -- calls ----------------------------------------------------------------------------

    def _mine(
        self, account: str, region: str, image_id: str, now: float, project_id: str | None
    ) -> dict[str, Any]:
        """The stored image of the caller's project, or the cloud's 404."""
        project = self.resolve_project(account, region, project_id)
        image = self.images.get(region, {}).get(image_id)
        if image is None or image["owner"] != project.id or self._render(image, now) is None:
            raise SimError(404, "IMG.0027", f"The image {image_id} does not exist.")
        return image

    def _check_allowed(self, account: str, action: str) -> None:
        if (account, action) in self.denied:
            raise SimError(403, "IMS.0211", f"Policy doesn't allow {action} to be performed.")

    def image_tags(
        self, account: str, region: str, image_id: str, now: float, project_id: str | None
    ) -> dict[str, Any]:
        self._check_allowed(account, LIST)
        image = self._mine(account, region, image_id, now, project_id)
        return {"tags": [{"key": k, "value": v} for k, v in tags_of(image).items()]}

    def tag_action(
        self,
        account: str,
        region: str,
        image_id: str,
        body: object,
        now: float,
        project_id: str | None,
    ) -> None:
        """``create`` adds or overwrites, ``delete`` removes (the action is case-sensitive)."""
        self._check_allowed(account, UPDATE)
        image = self._mine(account, region, image_id, now, project_id)
        action = body.get("action") if isinstance(body, Mapping) else None
        if action not in ("create", "delete"):
            raise bad("IMG.0001", "The request message format is invalid: action is create|delete.")
        tags = tags_of(image)
        for key, value in _tag_list(body):
            if action == "create":
                tags[key] = value
            else:
                tags.pop(key, None)
        image["tags"] = [f"{key}.{value}" for key, value in tags.items()]

    def patch_image(
        self,
        account: str,
        region: str,
        image_id: str,
        body: object,
        now: float,
        project_id: str | None,
    ) -> dict[str, Any]:
        self._check_allowed(account, UPDATE)
        image = self._mine(account, region, image_id, now, project_id)
        if not isinstance(body, list) or not body:
            raise bad("IMG.0001", "The request message format is invalid: a list of operations.")
        for op in body:
            if (
                not isinstance(op, Mapping)
                or op.get("op") != "replace"
                or op.get("path") not in PATCHABLE
            ):
                raise bad("IMG.0001", f"The request message format is invalid: {op!r}.")
        for op in body:
            image[str(op["path"])[1:]] = op.get("value")
        return self._render(image, now) or {}

    def image_members(
        self, account: str, region: str, image_id: str, now: float, project_id: str | None
    ) -> dict[str, Any]:
        self._check_allowed(account, GET)
        self._mine(account, region, image_id, now, project_id)
        members = [
            {"member_id": member, "status": "accepted", "image_id": image_id,
             "member_type": "project"}
            for member in self.members.get(image_id, [])
        ]  # fmt: skip
        return {"members": members, "page_info": {}}

    def delete_image(
        self, account: str, region: str, image_id: str, now: float, project_id: str | None
    ) -> None:
        self._check_allowed(account, DELETE)
        image = self._mine(account, region, image_id, now, project_id)
        del self.images[region][image_id]
        self._owned.get(str(image["owner"]), set()).discard(image_id)
        self._copies.pop(image_id, None)
        self.deleted.append(image_id)
