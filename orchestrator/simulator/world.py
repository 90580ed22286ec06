"""The fake cloud's ground truth: accounts, projects, images, copy jobs. No I/O, no clock.

The world's parts live beside it: ``params`` (how it behaves, the documented limits),
``accounts``, ``images`` (an image's attributes and the copy's checks), ``jobs`` (a copy job's
life) and ``truth`` (the counters and the :class:`~orchestrator.simulator.truth.Truth` they give).

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
from collections.abc import Mapping
from hashlib import sha256
from typing import Any

from orchestrator.core.units import GIB
from orchestrator.simulator.accounts import Account, Project
from orchestrator.simulator.imageops import ImageOps
from orchestrator.simulator.images import (
    CAP_MESSAGE,
    SimError,
    bad,
    check_body_fields,
    check_image,
    new_image,
    random_hex32,
    random_uuid,
    size_bytes,
)
from orchestrator.simulator.jobs import FAIL, LIVE, SUCCESS, SimJob, iso_time
from orchestrator.simulator.listing import FILTER_KEYS, FilterError, check_filters, matches
from orchestrator.simulator.params import AT_END, IMMEDIATE, WorldParams
from orchestrator.simulator.truth import Ledger, Truth


class World(Ledger, ImageOps):
    """All accounts, images and jobs of the fake cloud; as a :class:`Ledger`, the ground truth
    tests assert on (requests, signatures and their counters live there); as
    :class:`ImageOps`, the calls after a copy (tags, PATCH, members, DELETE)."""

    def __init__(self, params: WorldParams | None = None) -> None:
        super().__init__(params or WorldParams())
        self.accounts: dict[str, Account] = {}
        self.images: dict[str, dict[str, dict[str, Any]]] = {}  # region -> id -> attrs
        self.jobs: dict[str, SimJob] = {}
        self._rng = random.Random(f"{self.params.seed}:world")
        self._by_ak: dict[str, str] = {}
        self._copies: dict[str, SimJob] = {}  # target image id -> its job
        self._owned: dict[str, set[str]] = {}  # project id -> ids of its images (an index)
        self._live: dict[str, list[SimJob]] = {}  # account -> jobs maybe still INIT/RUNNING
        self._quotas: dict[str, int] = {}  # project id -> quota
        self._init_image_ops()

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
        project = Project(project_id or random_hex32(self._rng), name, region)
        acct.projects.setdefault(region, []).append(project)
        return project

    def add_image(
        self, account: str, region: str, attrs: Mapping[str, Any], *, project: str | None = None
    ) -> dict[str, Any]:
        """A private image owned by the account's project; API-shaped defaults fill the gaps."""
        owner = self._project(account, region, project)
        image = new_image(self._rng, owner.id, attrs)
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
            raise bad(
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
            shown = (SUCCESS, FAIL) if self.params.leave_killed else (SUCCESS,)
            if status not in shown or now < job.end + self.params.visibility_lag:
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
        if job is None or self.params.visibility == IMMEDIATE or self.params.leave_killed:
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
            raise bad("IMG.0001", str(error)) from None
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
            raise bad("IMG.0001", "The destination region must differ from the source region.")
        image = self.images.get(source_region, {}).get(image_id)
        shown = None if image is None else self._render(image, now)
        if image is None or shown is None or image["owner"] != source_project.id:
            raise bad("IMG.0027", "The image ID in the request does not exist.")
        check_image(shown, source_region, self.params.size_limit_gib(source_region), vault_id)
        used = self.quota(account, target, now=now, project_id=target_project.id)
        if used["used"] >= used["quota"]:
            raise bad("IMG.0015", "The number of private images has reached the maximum allowed.")
        if self.params.reject_name_conflicts and self.list_images(
            account, target, now=now, project_id=target_project.id, filters={"name": name}
        ):
            raise bad("IMG.0009", "The image name already exists.")
        if self.in_flight(account, now) >= self.params.cap:
            raise bad("IMG.0060", CAP_MESSAGE)
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
        copied = self.copy_attrs(image)
        copied.update(
            id=random_uuid(rng),
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
            raise bad("IMG.0001", f"The destination region {region} is invalid.")
        target_project = account.project(region, body["project_name"])
        if target_project is None:
            raise bad("IMG.0145", "The project name is incorrect.")
        if account.agencies is not None and body["agency_name"] not in account.agencies:
            raise bad("IMG.0179", "The token of the source image agency is invalid.")
        return name, description, region, target_project, body.get("vault_id") or None

    def _start_job(
        self, account: str, region: str, now: float, size_gib: float, rng: random.Random
    ) -> SimJob:
        p = self.params
        factor = 1.0 + rng.uniform(-p.noise, p.noise)
        duration = (p.fixed_seconds + size_gib * p.seconds_per_gib) * factor
        job = SimJob(
            random_hex32(rng),
            account,
            region,
            now,
            now + p.init_seconds,
            now + p.init_seconds + duration,
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

    # -- ground truth --------------------------------------------------------------------

    def truth(self, now: float) -> Truth:
        """What really happened, for tests and ``GET /_sim/truth``."""
        in_flight = {name: self.in_flight(name, now) for name in self.accounts}
        return self.truth_of(now, self.jobs.values(), in_flight)
