"""The fake cloud's ground truth: accounts, projects, images, copy jobs. No I/O, no clock.

Every method that depends on time takes ``now`` (epoch seconds); jobs progress lazily from it
(``INIT`` for ``init_seconds``, then ``RUNNING`` with a linear ``process_percent``, then
``SUCCESS`` or ``FAIL``), so a test can jump time by passing a later ``now``.

Refusals of the copy call are raised as :class:`SimError` (HTTP 400 unless said otherwise).
Codes the IMS documentation gives are used as documented; for conditions without a documented
code the simulator chooses, and says so:

    IMG.0001  bad body: missing field, wrong type, unknown region, description characters
              (simulator's choice), same source and target region (simulator's choice),
              image larger than the region's cross-region limit (simulator's choice)
    IMG.0002  name longer than 128          IMG.0003  name format invalid
    IMG.0004  description longer than 1024  IMG.0007  empty body (raised by the HTTP front)
    IMG.0009  name exists in the target (only with ``reject_name_conflicts``; UNVERIFIED)
    IMG.0015  target private-image quota reached
    IMG.0027  image not found / not the account's (404 with this code for an unknown job)
    IMG.0046  image not active              IMG.0060  too many copies in flight (the cap)
    IMG.0108  X-Project-Id not a project of this account in the region
    IMG.0130  full-ECS image without vault_id
    IMG.0145  project_name not a project of the account in the target region
    IMG.0167  ISO image                     IMG.0179  unknown agency (only if the account
    IMG.0197  encrypted image (closest documented code)   lists its agencies)
"""

from __future__ import annotations

import random
import re
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from orchestrator.config import (
    DEFAULT_LIMIT_GIB,
    KNOWN_REGIONS,
    LARGE_LIMIT_GIB,
    LARGE_LIMIT_REGIONS,
)
from orchestrator.simulator.listing import FILTER_KEYS, FilterError, check_filters, matches

GIB = 2**30
JOB_TYPE = "imsCrossRegionCopyImageJob"
INIT, RUNNING, SUCCESS, FAIL = "INIT", "RUNNING", "SUCCESS", "FAIL"
LIVE = frozenset({INIT, RUNNING})
IMMEDIATE, AT_END = "immediate", "at_end"
CAP_MESSAGE = (
    "The number of tasks exceeds the flow control limit. Wait for a while and then try again."
)
_NAME_RE = re.compile(r"^[0-9A-Za-z\u4e00-\u9fa5._\- ]+$")
_TRUE = frozenset({"1", "true", "True", "TRUE"})


class SimError(Exception):
    """A refusal as the cloud would answer it: HTTP status, IMS code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _bad(code: str, message: str) -> SimError:
    return SimError(400, code, message)


def iso_time(moment: float, *, millis: bool = False) -> str:
    """``2026-03-27T01:17:50.446Z`` (jobs) or ``2026-03-27T01:17:50Z`` (images)."""
    stamp = datetime.fromtimestamp(moment, UTC)
    if millis:
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def default_size_limits() -> dict[str, int]:
    return dict.fromkeys(LARGE_LIMIT_REGIONS, LARGE_LIMIT_GIB)


@dataclass(frozen=True)
class WorldParams:
    """How the world behaves. Durations are real seconds of (already accelerated) time."""

    seconds_per_gib: float = 0.05
    fixed_seconds: float = 0.5
    init_seconds: float = 0.2
    noise: float = 0.1  # each duration is multiplied by 1 ± noise (seeded per copy)
    fail_rate: float = 0.0  # fraction of accepted copies whose job ends in FAIL
    fail_code: str = "IMG.0500"
    fail_reason: str = "Failed to replicate the image: internal error."
    cap: int = 5  # copies in INIT/RUNNING per account; the next one gets IMG.0060
    visibility: str = IMMEDIATE  # when the copy shows in the target listing: immediate|at_end
    visibility_lag: float = 0.0  # seconds added to either
    seed: int = 0
    default_quota: int = 1000  # private images per project
    reject_name_conflicts: bool = False  # IMG.0009 when the name exists in the target
    regions: tuple[str, ...] = tuple(sorted(KNOWN_REGIONS))
    size_limits_gib: Mapping[str, int] = field(default_factory=default_size_limits)
    default_limit_gib: int = DEFAULT_LIMIT_GIB
    lock_after: int = 5  # consecutive bad signatures that lock an AK ...
    lock_seconds: float = 300.0  # ... for this long
    max_skew: float = 900.0  # allowed |X-Sdk-Date - now|

    def __post_init__(self) -> None:
        if self.visibility not in (IMMEDIATE, AT_END):
            raise ValueError(f"visibility must be {IMMEDIATE!r} or {AT_END!r}")
        if self.cap < 1 or not 0.0 <= self.fail_rate <= 1.0 or not 0.0 <= self.noise < 1.0:
            raise ValueError("cap must be >= 1, fail_rate in 0..1 and noise in 0..1")

    def size_limit_gib(self, region: str) -> int:
        return self.size_limits_gib.get(region, self.default_limit_gib)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["regions"] = list(self.regions)
        out["size_limits_gib"] = dict(self.size_limits_gib)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> WorldParams:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown world parameters: {', '.join(sorted(unknown))}")
        values = dict(raw)
        if "regions" in values:
            values["regions"] = tuple(values["regions"])
        if "size_limits_gib" in values:
            values["size_limits_gib"] = dict(values["size_limits_gib"])
        return cls(**values)


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    region: str


@dataclass
class Account:
    """A cloud account (domain) with one AK/SK pair and its projects per region."""

    name: str
    domain_id: str
    access_key: str
    secret_key: str
    security_token: str | None = None
    token_expires_at: float | None = None  # a temporary token stops working after this
    agencies: frozenset[str] | None = None  # None: any non-empty agency name is accepted
    projects: dict[str, list[Project]] = field(default_factory=dict)  # region -> [default, ...]

    def project(self, region: str, name: str | None = None) -> Project | None:
        """The project of ``region`` named ``name`` (default: the region's default project)."""
        for project in self.projects.get(region, []):
            if project.name == (name or region):
                return project
        return None

    def project_by_id(self, project_id: str) -> Project | None:
        for projects in self.projects.values():
            for project in projects:
                if project.id == project_id:
                    return project
        return None


@dataclass
class SimJob:
    """One copy job (or an "external" one that only holds a slot). Times in epoch seconds."""

    job_id: str
    account: str
    source_region: str
    begin: float
    run_start: float  # INIT ends
    end: float  # RUNNING ends (SUCCESS or FAIL)
    fails: bool = False
    error_code: str | None = None
    fail_reason: str | None = None
    external: bool = False
    image_id: str = ""  # the source image
    target_region: str = ""
    target_project: str = ""
    target_image_id: str = ""
    name: str = ""

    def status(self, now: float) -> str:
        if now < self.run_start:
            return INIT
        if now < self.end:
            return RUNNING
        return FAIL if self.fails else SUCCESS

    def progress(self, now: float) -> float:
        if now >= self.end:
            return 1.0 if not self.fails else self._linear(self.end)
        return self._linear(now)

    def _linear(self, moment: float) -> float:
        span = self.end - self.run_start
        if moment <= self.run_start or span <= 0:
            return 0.0
        return round(min(0.99, (moment - self.run_start) / span), 3)

    def to_api(self, now: float) -> dict[str, Any]:
        """The job exactly as ``GET /v1/cloudimages/job/{job_id}`` shows it."""
        status = self.status(now)
        entities: dict[str, Any] = {
            "image_name": self.name,
            "process_percent": self.progress(now),
            "current_task": "" if status in (SUCCESS, FAIL) else "copyImage",
        }
        if status == SUCCESS:
            entities["image_id"] = self.target_image_id
            entities["process_percent"] = 1
        return {
            "job_id": self.job_id,
            "job_type": JOB_TYPE,
            "begin_time": iso_time(self.begin, millis=True),
            "end_time": iso_time(self.end, millis=True) if status in (SUCCESS, FAIL) else "",
            "status": status,
            "error_code": self.error_code if status == FAIL else None,
            "fail_reason": self.fail_reason if status == FAIL else None,
            "entities": entities,
        }


@dataclass(frozen=True)
class RequestRecord:
    time: float
    method: str
    kind: str
    account: str | None
    status: int  # 0: no answer (connection dropped)
    path: str = ""  # path and query as received (HTTP front only)
    fault: str = ""  # the fault injected into this request, if any


@dataclass
class _KeyState:
    consecutive: int = 0
    locked_until: float = 0.0


def _hex32(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def is_encrypted(image: Mapping[str, Any]) -> bool:
    flags = (image.get("__system_encrypted"), image.get("__system__encrypted"))
    return bool(image.get("__system__cmkid")) or any(str(f) in _TRUE for f in flags if f)


def is_iso(image: Mapping[str, Any]) -> bool:
    return image.get("disk_format") == "iso" or image.get("virtual_env_type") == "IsoImage"


def size_bytes(image: Mapping[str, Any]) -> int:
    try:
        return int(str(image.get("__image_size") or 0))
    except ValueError:
        return 0


def min_disk(image: Mapping[str, Any]) -> int:
    try:
        return int(image.get("min_disk") or 0)
    except (TypeError, ValueError):
        return 0


def check_body_fields(body: Mapping[str, Any]) -> tuple[str, str]:
    """The copy body's (name, description) once present, typed and well-formed."""
    if not isinstance(body, Mapping):
        raise _bad("IMG.0001", "The request message format is invalid: not a JSON object.")
    for key in ("name", "region", "project_name", "agency_name"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise _bad("IMG.0001", f"The request message format is invalid: {key} is mandatory.")
    for key in ("description", "vault_id"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _bad("IMG.0001", f"The request message format is invalid: {key} is no string.")
    name: str = body["name"]
    if len(name) > 128:
        raise _bad("IMG.0002", "The image name contains more than 128 characters.")
    if not _NAME_RE.match(name) or name != name.strip():
        raise _bad("IMG.0003", "The image name format is invalid.")
    description: str = body.get("description") or ""
    if len(description) > 1024:
        raise _bad("IMG.0004", "The description contains more than 1024 characters.")
    if any(ch in description for ch in "<>\r\n"):
        raise _bad("IMG.0001", "The description must not contain <, > or a line break.")
    return name, description


class World:
    """All accounts, images and jobs of the fake cloud, plus the ground truth tests assert on."""

    def __init__(self, params: WorldParams | None = None) -> None:
        self.params = params or WorldParams()
        self.accounts: dict[str, Account] = {}
        self.images: dict[str, dict[str, dict[str, Any]]] = {}  # region -> id -> attrs
        self.jobs: dict[str, SimJob] = {}
        self.request_log: list[RequestRecord] = []
        self._rng = random.Random(f"{self.params.seed}:world")
        self._by_ak: dict[str, str] = {}
        self._copies: dict[str, SimJob] = {}  # target image id -> its job
        self._owned: dict[str, set[str]] = {}  # project id -> ids of its images (an index)
        self._live: dict[str, list[SimJob]] = {}  # account -> jobs maybe still INIT/RUNNING
        self._quotas: dict[str, int] = {}  # project id -> quota
        self._keys: dict[str, _KeyState] = {}
        # ground truth
        self.submissions: Counter[str] = Counter()
        self.max_in_flight: dict[str, int] = {}
        self.requests: Counter[str] = Counter()
        self.responses: dict[str, Counter[str]] = {}
        self.auth_failures: Counter[str] = Counter()
        self.auth_locked: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.lost_replies = 0
        self.external_jobs: Counter[str] = Counter()

    # -- set-up -------------------------------------------------------------------------

    def add_account(
        self,
        name: str,
        domain_id: str,
        access_key: str,
        secret_key: str,
        *,
        security_token: str | None = None,
        token_expires_at: float | None = None,
        agencies: frozenset[str] | None = None,
        project_ids: Mapping[str, str] | None = None,
    ) -> Account:
        """An account with a default project (name = region id) in every region of the world.

        ``project_ids`` fixes some default projects' ids; the others derive from the domain id.
        """
        if name in self.accounts or access_key in self._by_ak:
            raise ValueError(f"account {name!r} or its access key is already defined")
        account = Account(
            name, domain_id, access_key, secret_key, security_token, token_expires_at, agencies
        )
        for region in self.params.regions:
            fixed = (project_ids or {}).get(region)
            pid = fixed or sha256(f"{domain_id}/{region}".encode()).hexdigest()[:32]
            account.projects[region] = [Project(pid, region, region)]
        self.accounts[name] = account
        self._by_ak[access_key] = name
        return account

    def add_project(
        self, account: str, region: str, name: str, project_id: str | None = None
    ) -> Project:
        """A sub-project (e.g. ``cn-north-4_dev``) of ``account`` in ``region``."""
        acct = self.account(account)
        project = Project(project_id or _hex32(self._rng), name, region)
        acct.projects.setdefault(region, []).append(project)
        return project

    def add_image(
        self, account: str, region: str, attrs: Mapping[str, Any], *, project: str | None = None
    ) -> dict[str, Any]:
        """A private image owned by the account's project; API-shaped defaults fill the gaps."""
        owner = self._project(account, region, project)
        size = size_bytes(attrs) or 10 * GIB
        image: dict[str, Any] = {
            "id": _uuid(self._rng),
            "name": "image",
            "status": "active",
            "__imagetype": "private",
            "visibility": "private",
            "protected": False,
            "disk_format": "zvhd2",
            "container_format": "bare",
            "virtual_env_type": "FusionCompute",
            "min_disk": max(40, -(-size // GIB)),
            "min_ram": 0,
            "__image_size": str(size),
            "__os_type": "Linux",
            "__platform": "Ubuntu",
            "__os_bit": "64",
            "__isregistered": "true",
            "__image_source_type": "uds",
            "__whole_image": "false",
            "__system__cmkid": "",
            "__description": "",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "tags": [],
        }
        image.update(attrs)
        image["owner"] = owner.id
        for key, value in list(image.items()):  # the API returns every __x value as a string
            if key.startswith("__") and not isinstance(value, str):
                image[key] = str(value).lower() if isinstance(value, bool) else str(value)
        self.images.setdefault(region, {})[image["id"]] = image
        self._owned.setdefault(owner.id, set()).add(image["id"])
        return image

    def set_quota(self, account: str, region: str, quota: int, project: str | None = None) -> None:
        self._quotas[self._project(account, region, project).id] = quota

    # -- look-ups -----------------------------------------------------------------------

    def account(self, name: str) -> Account:
        try:
            return self.accounts[name]
        except KeyError:
            raise ValueError(f"no account {name!r} in the world") from None

    def account_by_access_key(self, access_key: str) -> Account | None:
        name = self._by_ak.get(access_key)
        return self.accounts[name] if name else None

    def _project(self, account: str, region: str, name: str | None) -> Project:
        project = self.account(account).project(region, name)
        if project is None:
            raise ValueError(f"account {account!r} has no project {name or region!r} in {region}")
        return project

    def resolve_project(self, account: str, region: str, project_id: str | None) -> Project:
        """The project an IMS call acts in (``X-Project-Id``; default project when None)."""
        acct = self.account(account)
        if project_id is None:
            project = acct.project(region)
        else:
            project = acct.project_by_id(project_id)
            if project is not None and project.region != region:
                project = None
        if project is None:
            raise _bad(
                "IMG.0108",
                f"The tenant ID was not found in the current region ({project_id} in {region}).",
            )
        return project

    def _render(self, image: dict[str, Any], now: float) -> dict[str, Any] | None:
        """The image as the API shows it at ``now``; None while a copy is not visible yet."""
        job = self._copies.get(image["id"])
        if job is None:
            return dict(image)
        status = job.status(now)
        if self.params.visibility == AT_END:
            if status != SUCCESS or now < job.end + self.params.visibility_lag:
                return None
        elif now < job.begin + self.params.visibility_lag:
            return None
        out = dict(image)
        out["status"] = {SUCCESS: "active", FAIL: "killed"}.get(status, "saving")
        out["updated_at"] = iso_time(min(now, job.end))
        return out

    def _exists(self, image: dict[str, Any], now: float) -> bool:
        """Counts against the quota (a copy does from submission, unless it fails unseen)."""
        job = self._copies.get(image["id"])
        if job is None or self.params.visibility == IMMEDIATE:
            return True
        return job.status(now) != FAIL

    def image(self, region: str, image_id: str, now: float) -> dict[str, Any] | None:
        found = self.images.get(region, {}).get(image_id)
        return None if found is None else self._render(found, now)

    def list_images(
        self,
        account: str,
        region: str,
        *,
        now: float,
        project_id: str | None = None,
        filters: Mapping[str, str] | None = None,
        limit: int = 500,
        marker: str | None = None,
    ) -> list[dict[str, Any]]:
        """One page of the project's images in id order, after ``marker`` (the last id seen)."""
        project = self.resolve_project(account, region, project_id)
        wanted = {k: v for k, v in (filters or {}).items() if k in FILTER_KEYS and v != ""}
        try:
            check_filters(wanted)
        except FilterError as error:
            raise _bad("IMG.0001", str(error)) from None
        page: list[dict[str, Any]] = []
        ids = self._owned.get(project.id, set())
        if "id" in wanted:  # a look-up by id need not walk the whole project
            ids = ids & {wanted["id"]}
        for image_id in sorted(ids):
            if marker is not None and image_id <= marker:
                continue
            image = self.images[region][image_id]
            if image["owner"] != project.id:
                continue
            shown = self._render(image, now)
            if shown is None or not matches(shown, wanted):
                continue
            page.append(shown)
            if len(page) >= limit:
                break
        return page

    def quota(
        self, account: str, region: str, *, now: float, project_id: str | None = None
    ) -> dict[str, int]:
        project = self.resolve_project(account, region, project_id)
        images = self.images.get(region, {})
        used = sum(
            1
            for image_id in self._owned.get(project.id, ())
            if images[image_id]["owner"] == project.id and self._exists(images[image_id], now)
        )
        return {"used": used, "quota": self._quotas.get(project.id, self.params.default_quota)}

    def in_flight(self, account: str, now: float) -> int:
        live = [job for job in self._live.get(account, []) if job.status(now) in LIVE]
        self._live[account] = live
        return len(live)

    def job(self, account: str, region: str, job_id: str, now: float) -> dict[str, Any]:
        """The job as its source region shows it; 404 IMG.0027 for another account's or region's."""
        job = self.jobs.get(job_id)
        if job is None or job.account != account or job.source_region != region:
            raise SimError(404, "IMG.0027", f"The job ID {job_id} in the request does not exist.")
        return job.to_api(now)

    # -- the copy -----------------------------------------------------------------------

    def copy(
        self,
        account: str,
        source_region: str,
        image_id: str,
        body: Mapping[str, Any],
        now: float,
        *,
        project_id: str | None = None,
    ) -> str:
        """Accept a cross-region copy and return its job id, or raise the cloud's refusal."""
        try:
            return self._copy(account, source_region, image_id, body, now, project_id)
        except SimError as refusal:
            self.rejections[refusal.code] += 1
            raise

    def _copy(
        self,
        account: str,
        source_region: str,
        image_id: str,
        body: Mapping[str, Any],
        now: float,
        project_id: str | None,
    ) -> str:
        acct = self.account(account)
        source_project = self.resolve_project(account, source_region, project_id)
        name, description, target, target_project, vault_id = self._check_body(acct, body)
        if target == source_region:
            raise _bad("IMG.0001", "The destination region must differ from the source region.")
        image = self.images.get(source_region, {}).get(image_id)
        shown = None if image is None else self._render(image, now)
        if image is None or shown is None or image["owner"] != source_project.id:
            raise _bad("IMG.0027", "The image ID in the request does not exist.")
        self._check_image(shown, source_region, vault_id)
        used = self.quota(account, target, now=now, project_id=target_project.id)
        if used["used"] >= used["quota"]:
            raise _bad("IMG.0015", "The number of private images has reached the maximum allowed.")
        if self.params.reject_name_conflicts and self.list_images(
            account, target, now=now, project_id=target_project.id, filters={"name": name}
        ):
            raise _bad("IMG.0009", "The image name already exists.")
        if self.in_flight(account, now) >= self.params.cap:
            raise _bad("IMG.0060", CAP_MESSAGE)
        key = f"{account}/{image_id}/{target}"
        self.submissions[key] += 1
        rng = random.Random(f"{self.params.seed}:{key}:{self.submissions[key]}")
        job = self._start_job(acct.name, source_region, now, size_bytes(shown) / GIB, rng)
        if rng.random() < self.params.fail_rate:
            job.fails, job.error_code, job.fail_reason = (
                True,
                self.params.fail_code,
                self.params.fail_reason,
            )
        copied = dict(image)
        copied.update(
            id=_uuid(rng),
            name=name,
            __description=description,
            owner=target_project.id,
            created_at=iso_time(now),
            updated_at=iso_time(now),
        )
        job.image_id, job.target_region, job.target_project = image_id, target, target_project.id
        job.target_image_id, job.name = copied["id"], name
        self.images.setdefault(target, {})[copied["id"]] = copied
        self._owned.setdefault(target_project.id, set()).add(copied["id"])
        self._copies[copied["id"]] = job
        return job.job_id

    def _check_body(
        self, account: Account, body: Mapping[str, Any]
    ) -> tuple[str, str, str, Project, str | None]:
        """(name, description, target region, target project, vault id) or the refusal."""
        name, description = check_body_fields(body)
        region: str = body["region"]
        if region not in self.params.regions:
            raise _bad("IMG.0001", f"The destination region {region} is invalid.")
        target_project = account.project(region, body["project_name"])
        if target_project is None:
            raise _bad("IMG.0145", "The project name is incorrect.")
        if account.agencies is not None and body["agency_name"] not in account.agencies:
            raise _bad("IMG.0179", "The token of the source image agency is invalid.")
        return name, description, region, target_project, body.get("vault_id") or None

    def _check_image(self, image: Mapping[str, Any], region: str, vault_id: str | None) -> None:
        if image.get("status") != "active":
            raise _bad("IMG.0046", "The image is unavailable.")
        if is_encrypted(image):
            raise _bad("IMG.0197", "Encrypted images cannot be replicated across regions.")
        if is_iso(image):
            raise _bad("IMG.0167", "This operation cannot be performed for ISO images.")
        limit = self.params.size_limit_gib(region)
        if min_disk(image) > limit or size_bytes(image) > limit * GIB:
            raise _bad(
                "IMG.0001",
                f"Images over {limit} GiB cannot be replicated across regions from {region}.",
            )
        if str(image.get("__whole_image")).lower() == "true" and not vault_id:
            raise _bad("IMG.0130", "The full-ECS image cannot be exported or replicated.")

    def _start_job(
        self, account: str, region: str, now: float, size_gib: float, rng: random.Random
    ) -> SimJob:
        p = self.params
        factor = 1.0 + rng.uniform(-p.noise, p.noise)
        duration = (p.fixed_seconds + size_gib * p.seconds_per_gib) * factor
        job = SimJob(
            _hex32(rng), account, region, now, now + p.init_seconds, now + p.init_seconds + duration
        )
        self.jobs[job.job_id] = job
        self._live.setdefault(account, []).append(job)
        in_flight = self.in_flight(account, now)
        self.max_in_flight[account] = max(self.max_in_flight.get(account, 0), in_flight)
        return job

    def occupy(self, account: str, count: int, seconds: float, now: float) -> list[str]:
        """Start copies from outside the tool that hold slots for ``seconds``.

        The cloud applies its cap to them too: only the free slots are taken. Returns their ids.
        """
        self.account(account)
        started: list[str] = []
        while len(started) < count and self.in_flight(account, now) < self.params.cap:
            rng = random.Random(f"{self.params.seed}:external:{account}:{len(self.jobs)}")
            job = self._start_job(account, self.params.regions[0], now, 0.0, rng)
            job.run_start, job.end, job.external = now, now + seconds, True
            self.external_jobs[account] += 1
            started.append(job.job_id)
        return started

    def fail_job(
        self, job_id: str, now: float, code: str | None = None, reason: str | None = None
    ) -> None:
        """End a job now with FAIL (no-op on a job already finished)."""
        job = self.jobs[job_id]
        if job.status(now) in LIVE:
            job.end = max(now, job.run_start)
            job.fails = True
            job.error_code = code or self.params.fail_code
            job.fail_reason = reason or self.params.fail_reason

    # -- requests and signatures -------------------------------------------------------

    def record_request(
        self,
        now: float,
        method: str,
        kind: str,
        account: str | None,
        status: int,
        *,
        path: str = "",
        fault: str = "",
    ) -> None:
        self.request_log.append(RequestRecord(now, method, kind, account, status, path, fault))
        self.requests[kind] += 1
        self.responses.setdefault(kind, Counter())[str(status)] += 1

    def note_lost_reply(self) -> None:
        self.lost_replies += 1

    def is_locked(self, access_key: str, now: float) -> bool:
        state = self._keys.get(access_key)
        return state is not None and now < state.locked_until

    def note_auth_failure(self, access_key: str, now: float) -> None:
        """A request with a bad signature (or date, or key); locks the key after a series."""
        state = self._keys.setdefault(access_key, _KeyState())
        if now < state.locked_until:
            self.auth_locked[access_key] += 1
            return
        self.auth_failures[access_key] += 1
        state.consecutive += 1
        if state.consecutive >= self.params.lock_after:
            state.consecutive = 0
            state.locked_until = now + self.params.lock_seconds

    def note_auth_success(self, access_key: str) -> None:
        self._keys.setdefault(access_key, _KeyState()).consecutive = 0

    # -- ground truth --------------------------------------------------------------------

    def truth(self, now: float) -> dict[str, Any]:
        """A JSON-able summary of what really happened, for tests and ``GET /_sim/truth``."""
        copies = [job for job in self.jobs.values() if not job.external]
        statuses = Counter(job.status(now) for job in copies)
        return {
            "now": now,
            "copies_total": len(copies),
            "submissions": dict(self.submissions),
            "duplicates": sorted(key for key, n in self.submissions.items() if n > 1),
            "max_in_flight": dict(self.max_in_flight),
            "in_flight_now": {name: self.in_flight(name, now) for name in self.accounts},
            "external_jobs": dict(self.external_jobs),
            "jobs": dict(statuses),
            "rejections": dict(self.rejections),
            "requests": dict(self.requests),
            "responses": {kind: dict(c) for kind, c in self.responses.items()},
            "auth_failures": dict(self.auth_failures),
            "auth_locked": dict(self.auth_locked),
            "locked_keys": sorted(k for k in self._keys if self.is_locked(k, now)),
            "lost_replies": self.lost_replies,
            "copies": [
                {
                    "account": job.account,
                    "image_id": job.image_id,
                    "source_region": job.source_region,
                    "target_region": job.target_region,
                    "name": job.name,
                    "job_id": job.job_id,
                    "target_image_id": job.target_image_id,
                    "status": job.status(now),
                    "begin": job.begin,
                    "end": job.end,
                }
                for job in copies
            ],
        }
