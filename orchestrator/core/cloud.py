"""The cloud seam: what the engine needs from IMS, as values and one error type.

``TenantCloud`` is one account's view of IMS in every region. The HTTP implementation lives
in ``orchestrator.ims.client``; the in-memory one over the simulator's world in
``orchestrator.simulator.inmemory``. Errors cross this seam only as :class:`CloudError`, already
classified (``ErrorKind``), so the engine never sees sockets or HTTP status handling.

    CloudError
      kind = NOT_SENT       connection refused / DNS failure before the request left: safe to retry
      kind = UNKNOWN        a mutating call whose outcome is unknown (timeout, reset, 5xx on POST)
      kind = TRANSIENT      a read that failed for a passing reason (timeout, 5xx, 429, APIGW.0308)
      kind = BACK_PRESSURE  IMG.0060: too many tasks for the tenant, try later
      kind = AUTH           401/403, APIGW.0301/0302/0303/0306/0307: stop the tenant (for good
                            only if the key itself is wrong: :func:`refuses_key`)
      kind = QUOTA          IMG.0015: the target's private-image quota is full
      kind = NOT_FOUND      the job or image id is unknown to the cloud (404)
      kind = PERMANENT      any other refusal: the item fails with code and message
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

ACTIVE = "active"
KILLED = "killed"

# The request budget's order for a call (lower first): a copy submission before everything, a
# poll by the seconds to its job's predicted end (>= 0), and the calls after a copy (verify,
# carry) behind every poll, so that a resumed run's thousands of checks never delay the polls
# of its copies in flight. The checks still all run: polls are few (<= 5 copies per account).
AFTER_COPY = math.inf

# The attributes a copy is compared on with its source (engine/aftercopy.py), as wire keys.
FACT_KEYS = (
    "__image_size",
    "min_disk",
    "min_ram",
    "max_ram",
    "__os_type",
    "__os_version",
    "__platform",
    "__os_bit",
    "disk_format",
    "virtual_env_type",
    "hw_firmware_type",
    "architecture",
    "__support_arm",
    "checksum",
)


class ErrorKind(StrEnum):
    NOT_SENT = "not_sent"
    UNKNOWN = "unknown"
    TRANSIENT = "transient"
    BACK_PRESSURE = "back_pressure"
    AUTH = "auth"
    QUOTA = "quota"
    NOT_FOUND = "not_found"
    PERMANENT = "permanent"


# Refusals that do not mean the key is wrong: a missing permission, API access denied, a clock
# skew, an expired token. They block a tenant for one run only; the next run asks again.
PASSING_REFUSALS = frozenset({"APIGW.0302", "APIGW.0303", "APIGW.0306", "APIGW.0307"})
KEY_REFUSAL = "APIGW.0301"


def refuses_key(code: str | None, status: int | None) -> bool:
    """The refusal means the key itself is wrong (bad signature, unknown or disabled AK): those
    walk a key into the gateway's 5-failure lock, so they are remembered across runs. A 403
    (a permission, a policy deny) never is."""
    if code == KEY_REFUSAL:
        return True
    if code in PASSING_REFUSALS:
        return False
    return status == 401


def remembered_refusal(code: str) -> bool:
    """A block stored in the checkpoint (its ``code``: the cloud's code, else the HTTP status)
    still holds for the same key: only key refusals do (older runs stored any refusal)."""
    return code not in PASSING_REFUSALS and code != "403"


class StopFlag(Protocol):
    """The flag that says the run stops submitting (the engine's ``SubmitStop``)."""

    def is_set(self) -> bool: ...
    async def wait(self) -> None: ...
    def withdrawing(self) -> AbstractContextManager[object]:
        """A scope for a wait that the flag, once set, cancels (at once if set already)."""
        ...


# Set by the engine around a copy request: the client checks it right before sending, after any
# local wait (the rate budget), which it also leaves at once when the flag is set. A request
# not sent because of it fails with NOT_SENT and the code STOPPED.
SEND_STOP: ContextVar[StopFlag | None] = ContextVar("SEND_STOP", default=None)
STOPPED = "STOPPED"


class CloudError(Exception):
    """A classified failure of one cloud call. Never carries a secret."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id

    def __str__(self) -> str:
        status = f"HTTP {self.status}" if self.status else ""
        message = self.message
        # A body without a message: classify's stand-in names the status, said once here.
        if status and (message == status or message.startswith(f"{status} ")):
            message = message[len(status) :].lstrip()
        said = f"{self.code}: {message}" if self.code and message else self.code or message
        return " ".join(part for part in (status, said) if part)


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Image:
    """The attributes of an IMS image that the rules and the engine look at."""

    id: str
    name: str
    status: str
    imagetype: str = "private"
    visibility: str = "private"
    disk_format: str = "zvhd2"
    virtual_env_type: str = "FusionCompute"
    min_disk: int = 40
    size_bytes: int | None = None
    cmk_id: str = ""
    encrypted_flag: str = ""
    whole_image: bool = False
    os_type: str = "Linux"
    description: str = ""
    created_at: str = ""  # ISO 8601 UTC as the API gives it, e.g. 2018-09-06T14:03:27Z
    tags: tuple[str, ...] = ()  # user tags as ``key.value`` strings
    tags_listed: bool = False  # the listing carried ``tags`` (a list): ``()`` then means none
    enterprise_project_id: str = ""
    facts: tuple[tuple[str, str], ...] = ()  # FACT_KEYS present, as text (lower-case booleans)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Image:
        """Build from one element of ``GET /v2/cloudimages`` (all ``__x`` values are strings).

        Its texts are :func:`_text`'s reading of each of ``_IMAGE_TEXTS``, in their order, made
        in one comprehension (a call per field was a third of the reading of an image, made
        for every image of every listing)."""
        get = raw.get
        (
            image_id,
            name,
            status,
            imagetype,
            visibility,
            disk_format,
            virtual_env_type,
            size_text,
            cmk_id,
            encrypted,
            encrypted_old,
            whole_image,
            os_type,
            description,
            description_old,
            created_at,
            enterprise_project_id,
        ) = ["" if value is None else str(value) for value in map(get, _IMAGE_TEXTS)]
        try:
            size: int | None = int(size_text) if size_text else None
        except ValueError:
            size = None
        try:
            min_disk = int(get("min_disk") or 0)
        except (TypeError, ValueError, OverflowError):  # OverflowError: inf (JSON's 1e999)
            min_disk = 0
        tags = get("tags")
        return _frozen(  # the fields in their order, as __init__ sets them
            cls,
            {
                "id": image_id,
                "name": name,
                "status": status,
                "imagetype": imagetype,
                "visibility": visibility,
                "disk_format": disk_format,
                "virtual_env_type": virtual_env_type,
                "min_disk": min_disk,
                "size_bytes": size,
                "cmk_id": cmk_id,
                "encrypted_flag": encrypted or encrypted_old,
                "whole_image": whole_image.lower() == "true",
                "os_type": os_type,
                "description": description or description_old,
                "created_at": created_at,
                "tags": () if tags.__class__ is list and not tags else _tags(tags),
                "tags_listed": isinstance(tags, list),
                "enterprise_project_id": enterprise_project_id,
                "facts": _facts(raw),
            },
        )


_T = TypeVar("_T")


# The keys of an image read as texts (:func:`_text`: absent or null is ""), in the order
# :meth:`Image.from_api` names them.
_IMAGE_TEXTS = (
    "id",
    "name",
    "status",
    "__imagetype",
    "visibility",
    "disk_format",
    "virtual_env_type",
    "__image_size",
    "__system__cmkid",
    "__system_encrypted",
    "__system__encrypted",
    "__whole_image",
    "__os_type",
    "__description",
    "description",
    "created_at",
    "enterprise_project_id",
)


def _frozen(cls: type[_T], fields: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass ``cls`` holding ``fields`` (every one of its fields),
    as its ``__init__`` would make it, without that ``__init__``'s ``object.__setattr__`` call
    per field: an answer read for every request of a run is made into a Job or an Image."""
    made = object.__new__(cls)
    made.__dict__.update(fields)
    return made


def _facts(raw: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """FACT_KEYS present in ``raw``, as compared: ``True``/``"True"`` and ``"true"`` are the
    same fact (a plain loop: it runs for every image of every listing; the booleans' texts in
    any case found by one look-up rather than lowered and looked up)."""
    get = raw.get
    facts = []
    for key in FACT_KEYS:
        value = get(key)
        if value is not None:
            text = str(value)
            facts.append((key, _BOOLEANS.get(text, text)))
    return tuple(facts)


# "true" and "false" in every mix of cases -> lowered: a fact's text as compared.
_BOOLEANS = {
    "".join(letters): word
    for word in ("true", "false")
    for letters in itertools.product(*((char, char.upper()) for char in word))
}


def _tags(raw: object) -> tuple[str, ...]:
    """``tags`` as the listing gives them (``["key.value", ...]``); anything else is ignored."""
    if not isinstance(raw, list | tuple):
        return ()
    return tuple(str(tag) for tag in raw if isinstance(tag, str | int | float))


JOB_SUCCESS = "SUCCESS"
JOB_FAIL = "FAIL"


@dataclass(frozen=True)
class Job:
    """A cross-region copy job as ``GET /v1/cloudimages/job/{job_id}`` shows it."""

    job_id: str
    status: str
    progress: float | None = None
    image_id: str | None = None
    error_code: str | None = None
    fail_reason: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in (JOB_SUCCESS, JOB_FAIL)

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> Job:
        get = raw.get
        entities = get("entities") or {}
        if not isinstance(entities, (dict, Mapping)):  # a dict is found without the ABC
            entities = {}
        progress = entities.get("process_percent")
        try:
            percent = float(progress) if progress is not None else None
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond a float
            percent = None
        if percent is not None and not math.isfinite(percent):  # inf/NaN: no progress to go on
            percent = None
        error_code = get("error_code") or entities.get("error_code")
        reason = get("fail_reason") or entities.get("error")
        job_id, status = get("job_id"), get("status")
        return _frozen(
            cls,
            {
                "job_id": "" if job_id is None else str(job_id),
                "status": "" if status is None else str(status).upper(),
                "progress": percent,
                "image_id": entities.get("image_id") or None,
                "error_code": str(error_code) if error_code else None,
                "fail_reason": str(reason) if reason else None,
            },
        )


@dataclass(frozen=True)
class CopyRequest:
    """Body of ``POST /v1/cloudimages/{image_id}/cross_region_copy``."""

    name: str
    description: str
    region: str
    project_name: str
    agency_name: str
    vault_id: str | None = None

    def body(self) -> dict[str, str]:
        out = {
            "name": self.name,
            "description": self.description,
            "region": self.region,
            "project_name": self.project_name,
            "agency_name": self.agency_name,
        }
        if self.vault_id:
            out["vault_id"] = self.vault_id
        return out


@dataclass(frozen=True)
class Quota:
    used: int
    quota: int


class TenantCloud(Protocol):
    """One cloud account's view of IMS. ``project`` defaults to the region's default project."""

    async def probe(self, region: str) -> str:
        """Check the credentials with one request (IAM project lookup of ``region``'s default
        project); return the account (domain) id, so two tenants of one account share a window."""
        ...

    async def list_images(
        self,
        region: str,
        *,
        project: str | None = None,
        name: str | None = None,
        image_id: str | None = None,
        private_only: bool = True,
        filters: Mapping[str, str] | None = None,
        priority: float = 0.0,
    ) -> list[Image]:
        """All matching images of the region (every page, ``limit`` 500, ``marker`` the last id).
        ``priority``: the request budget's order (``AFTER_COPY`` for a check after a copy).

        ``filters`` are further query keys of ``GET /v2/cloudimages`` as the API documents them
        (``created_at=gte:2026-01-01T00:00:00Z``, ``tag``, ``enterprise_project_id``,
        ``__os_type``, ``status``...), passed as given; how the cloud combines them is
        UNVERIFIED, so a caller that must be exact filters the result again."""
        ...

    async def copy_image(
        self,
        region: str,
        image_id: str,
        request: CopyRequest,
        *,
        project: str | None = None,
    ) -> str:
        """Start a cross-region copy from ``region``; return the job id.

        While the request waits to be sent (the request budget, a connection), a set
        ``SEND_STOP`` flag takes it back unsent (``NOT_SENT``, code ``STOPPED``). Once on the
        wire, the request runs to its answer or its timeout."""
        ...

    async def get_job(
        self, region: str, job_id: str, *, project: str | None = None, priority: float = 0.0
    ) -> Job:
        """The job as the source region sees it. When the request budget cannot serve every
        poll, lower ``priority`` values go first (a job near its predicted end)."""
        ...

    async def get_quota(self, region: str, *, project: str | None = None) -> Quota:
        """The private-image quota of a region's project."""
        ...

    # -- after the copy (engine/aftercopy.py, commands/cleanup.py) ------------------------

    # These take the request budget's order as ``priority`` too: ``AFTER_COPY`` from the steps
    # after a copy (a write without one goes as early as a copy submission).

    async def image_tags(
        self, region: str, image_id: str, *, project: str | None = None, priority: float = 0.0
    ) -> dict[str, str]:
        """``GET /v2/{project_id}/images/{image_id}/tags``: the image's tags, key -> value."""
        ...

    async def add_image_tags(
        self,
        region: str,
        image_id: str,
        tags: Mapping[str, str],
        *,
        project: str | None = None,
        priority: float | None = None,
    ) -> None:
        """``POST /v2/{project_id}/images/{image_id}/tags/action`` with ``action`` ``create``
        (creates or overwrites: idempotent)."""
        ...

    async def update_image(
        self,
        region: str,
        image_id: str,
        changes: Mapping[str, int],
        *,
        project: str | None = None,
        priority: float | None = None,
    ) -> None:
        """``PATCH /v2/cloudimages/{image_id}``: ``replace`` each attribute (``min_ram``...)."""
        ...

    async def image_members(
        self, region: str, image_id: str, *, project: str | None = None, priority: float = 0.0
    ) -> list[str]:
        """``GET /v1/{project_id}/cloudimages/{image_id}/members``: the projects it is shared
        with (member ids)."""
        ...

    async def delete_image(self, region: str, image_id: str, *, project: str | None = None) -> None:
        """``DELETE /v2/images/{image_id}`` (204); the image may take a while to be gone."""
        ...
