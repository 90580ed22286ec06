"""The simulator's ground truth: what really happened, kept as it happens, read as a :class:`Truth`.

:class:`Ledger` counts as the world works (submissions per item, peak copies in flight per
account, requests and answers, signature failures and locked keys, lost replies); the world
(orchestrator/simulator/world.py) is a ledger. ``World.truth(now)`` freezes it into a
:class:`Truth` for the tests; ``GET /_sim/truth`` serves :meth:`Truth.to_dict` as JSON and
:meth:`Truth.from_dict` reads it back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.simulator.jobs import SimJob
from orchestrator.simulator.params import WorldParams
from orchestrator.simulator.throttle import KeyRateGate


@dataclass(frozen=True)
class RequestRecord:
    time: float
    method: str
    kind: str
    account: str | None
    status: int  # 0: no answer (connection dropped)
    path: str = ""  # path and query as received (HTTP front only)
    fault: str = ""  # the fault injected into this request, if any


@dataclass(frozen=True)
class CopyRecord:
    """One accepted copy (jobs that only hold a slot from outside the tool are not copies)."""

    account: str
    image_id: str  # the source image
    source_region: str
    target_region: str
    name: str
    job_id: str
    target_image_id: str
    status: str  # INIT, RUNNING, SUCCESS or FAIL at the time of the truth
    begin: float  # accepted
    end: float  # the job ends (or ended)


@dataclass(frozen=True)
class Truth:
    """What really happened in the world, at ``now``. Keys of ``submissions``/``duplicates``
    are ``account/image_id/target_region``; the other mappings are by account, access key,
    request kind, IMS code or job status, as named."""

    now: float
    copies_total: int
    submissions: Mapping[str, int]  # accepted copies per item
    duplicates: tuple[str, ...]  # items accepted more than once
    max_in_flight: Mapping[str, int]  # peak INIT/RUNNING jobs per account
    in_flight_now: Mapping[str, int]  # per account
    external_jobs: Mapping[str, int]  # slots taken from outside the tool, per account
    jobs: Mapping[str, int]  # copies per job status
    rejections: Mapping[str, int]  # refused copies per IMS code
    requests: Mapping[str, int]  # per kind: list, copy, job, quota, iam
    responses: Mapping[str, Mapping[str, int]]  # kind -> HTTP status ("0": dropped) -> count
    auth_failures: Mapping[str, int]  # per access key
    auth_locked: Mapping[str, int]  # requests refused while the key was locked, per access key
    locked_keys: tuple[str, ...]
    lost_replies: int
    copies: tuple[CopyRecord, ...]
    faults: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # set by the front
    throttled: int = 0  # 429s of the per-key rate (params.key_rate)
    inside_retry_after: int = 0  # requests that came inside a Retry-After announced to the key

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``GET /_sim/truth``."""
        out = asdict(self)
        out["duplicates"] = list(self.duplicates)
        out["locked_keys"] = list(self.locked_keys)
        out["copies"] = [asdict(copy) for copy in self.copies]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Truth:
        """The truth read back from :meth:`to_dict`'s JSON."""
        return cls(
            now=float(raw["now"]),
            copies_total=int(raw["copies_total"]),
            submissions=dict(raw["submissions"]),
            duplicates=tuple(raw["duplicates"]),
            max_in_flight=dict(raw["max_in_flight"]),
            in_flight_now=dict(raw["in_flight_now"]),
            external_jobs=dict(raw["external_jobs"]),
            jobs=dict(raw["jobs"]),
            rejections=dict(raw["rejections"]),
            requests=dict(raw["requests"]),
            responses={kind: dict(counts) for kind, counts in raw["responses"].items()},
            auth_failures=dict(raw["auth_failures"]),
            auth_locked=dict(raw["auth_locked"]),
            locked_keys=tuple(raw["locked_keys"]),
            lost_replies=int(raw["lost_replies"]),
            copies=tuple(CopyRecord(**copy) for copy in raw["copies"]),
            faults={kind: dict(counts) for kind, counts in raw.get("faults", {}).items()},
            throttled=int(raw.get("throttled", 0)),
            inside_retry_after=int(raw.get("inside_retry_after", 0)),
        )


@dataclass
class _KeyState:
    consecutive: int = 0
    locked_until: float = 0.0


class Ledger:
    """The ground-truth counters, the request log and the access keys' lock state."""

    def __init__(self, params: WorldParams) -> None:
        self.params = params
        self.request_log: list[RequestRecord] = []
        self.submissions: Counter[str] = Counter()
        self.max_in_flight: dict[str, int] = {}
        self.requests: Counter[str] = Counter()
        self.responses: dict[str, Counter[str]] = {}
        self.auth_failures: Counter[str] = Counter()
        self.auth_locked: Counter[str] = Counter()
        self.rejections: Counter[str] = Counter()
        self.lost_replies = 0
        self.external_jobs: Counter[str] = Counter()
        self._keys: dict[str, _KeyState] = {}
        self.gate = KeyRateGate(rate=params.key_rate)  # the gateway's per-user throttling

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

    def truth_of(
        self, now: float, jobs: Iterable[SimJob], in_flight_now: Mapping[str, int]
    ) -> Truth:
        """The truth at ``now``, given the world's jobs and its copies in flight per account."""
        copies = [job for job in jobs if not job.external]
        statuses = Counter(job.status(now) for job in copies)
        return Truth(
            now=now,
            copies_total=len(copies),
            submissions=dict(self.submissions),
            duplicates=tuple(sorted(key for key, n in self.submissions.items() if n > 1)),
            max_in_flight=dict(self.max_in_flight),
            in_flight_now=dict(in_flight_now),
            external_jobs=dict(self.external_jobs),
            jobs=dict(statuses),
            rejections=dict(self.rejections),
            requests=dict(self.requests),
            responses={kind: dict(c) for kind, c in self.responses.items()},
            auth_failures=dict(self.auth_failures),
            auth_locked=dict(self.auth_locked),
            locked_keys=tuple(sorted(k for k in self._keys if self.is_locked(k, now))),
            lost_replies=self.lost_replies,
            throttled=self.gate.refusals,
            inside_retry_after=self.gate.inside_retry_after,
            copies=tuple(
                CopyRecord(
                    account=job.account,
                    image_id=job.image_id,
                    source_region=job.source_region,
                    target_region=job.target_region,
                    name=job.name,
                    job_id=job.job_id,
                    target_image_id=job.target_image_id,
                    status=job.status(now),
                    begin=job.begin,
                    end=job.end,
                )
                for job in copies
            ),
        )
