"""Items and their state machine: values only, no I/O, no clock.

An item is one row of the migration list, identified by (tenant, image_id, target_region).
Its ``phase`` only moves forward within an attempt (see ``TRANSITIONS``); moving back to
``pending`` starts a new attempt and increments ``attempt``, which never goes down.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from sys import intern
from typing import TYPE_CHECKING, Any

from orchestrator.core.frozen import replacer

DEFAULT_TENANT = "default"
TOKEN_PREFIX = "ims-migrate:"  # noqa: S105 -- a marker in image descriptions, not a secret


class PublicState(StrEnum):
    """The coarse state of an item that people see: report, progress, metrics, status."""

    PENDING = "pending"
    RUNNING = "running"  # a copy may be in progress in the cloud (any phase holding a slot)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"

    @property
    def is_problem(self) -> bool:
        """Failed or rejected: someone must look."""
        return self in (PublicState.FAILED, PublicState.REJECTED)


class Phase(StrEnum):
    PENDING = "pending"  # nothing in the cloud for this attempt (yet)
    SUBMITTING = "submitting"  # intent durable; the POST may have been sent
    RECONCILING = "reconciling"  # POST outcome unknown: looking for the copy in the target
    RUNNING = "running"  # job id durable; polling the job
    ADOPTED = "adopted"  # copy found in the target by its token; waiting for it to be active
    # After the copy (no copy slot held; engine/aftercopy.py): never submits a copy again.
    VERIFYING = "verifying"  # the new image's id is durable: wait until active, compare
    CARRYING = "carrying"  # verify's verdict is durable: carry tags and min_ram/max_ram
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"

    # Asked of every item in every pass over 100,000 of them (a resume makes several before
    # its first poll): a look-up in a set made once, not a tuple of members made per call.

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def holds_slot(self) -> bool:
        """Whether a copy may be in progress in the cloud for this item (counts against the cap)."""
        return self in SLOT_PHASES

    @property
    def is_after_copy(self) -> bool:
        """The copy is made; the steps after it (verify, carry) are left: no slot is held."""
        return self in AFTER_COPY_PHASES

    @property
    def public(self) -> PublicState:
        """The coarse state of the report: pending, running, succeeded, failed, rejected."""
        if self.holds_slot or self.is_after_copy:
            return PublicState.RUNNING
        return PublicState(self.value)


_TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.REJECTED})
# The phases of Phase.holds_slot and Phase.is_after_copy, for a pass over every item that
# looks them up without the properties.
SLOT_PHASES = frozenset({Phase.SUBMITTING, Phase.RECONCILING, Phase.RUNNING, Phase.ADOPTED})
AFTER_COPY_PHASES = frozenset({Phase.VERIFYING, Phase.CARRYING})


# Forward moves within one attempt. A move to PENDING (a new attempt) is allowed from any
# non-terminal phase, and from FAILED/REJECTED on an explicit retry; it increments ``attempt``.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset(
        {
            Phase.SUBMITTING,
            Phase.REJECTED,
            Phase.SUCCEEDED,
            Phase.ADOPTED,
            Phase.VERIFYING,
            Phase.FAILED,
        }
    ),
    Phase.SUBMITTING: frozenset({Phase.RUNNING, Phase.RECONCILING, Phase.FAILED}),
    Phase.RECONCILING: frozenset({Phase.ADOPTED, Phase.SUCCEEDED, Phase.VERIFYING, Phase.FAILED}),
    Phase.RUNNING: frozenset({Phase.SUCCEEDED, Phase.VERIFYING, Phase.FAILED, Phase.RECONCILING}),
    Phase.ADOPTED: frozenset({Phase.SUCCEEDED, Phase.VERIFYING, Phase.FAILED}),
    # After the copy: the image turned out broken (killed) or never active -> failed.
    Phase.VERIFYING: frozenset({Phase.CARRYING, Phase.SUCCEEDED, Phase.FAILED}),
    Phase.CARRYING: frozenset({Phase.SUCCEEDED}),
    Phase.SUCCEEDED: frozenset(),
    # --retry-failed (a new attempt) on an item whose job may still be alive: adopt it, or look
    # for its copy when the cloud no longer knows the job.
    Phase.FAILED: frozenset({Phase.RUNNING, Phase.RECONCILING}),
    Phase.REJECTED: frozenset(),
}


def _forward_closure() -> dict[Phase, frozenset[Phase]]:
    """Every phase reachable from each phase without a new attempt (terminal phases lead on
    only through an explicit retry, which is a new attempt)."""
    graph = {p: frozenset() if p.is_terminal else nxt for p, nxt in TRANSITIONS.items()}
    reach: dict[Phase, frozenset[Phase]] = {}
    for start in graph:
        seen: set[Phase] = set()
        todo = list(graph[start])
        while todo:
            phase = todo.pop()
            if phase not in seen:
                seen.add(phase)
                todo.extend(graph[phase])
        reach[start] = frozenset(seen)
    return reach


FORWARD_WITHIN_ATTEMPT = _forward_closure()


class TransitionError(ValueError):
    """A move the state machine forbids: a bug, never a cloud condition."""


def item_key(tenant: str, image_id: str, target_region: str) -> str:
    return f"{tenant}/{image_id}/{target_region}"


def item_token(key: str) -> str:
    """The per-item marker placed in the copy's description, found again when reconciling."""
    return TOKEN_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Row:
    """One valid row of the migration list, with defaults applied.

    Slots, not a ``__dict__``: a list holds 100,000 of them (memory). ``key`` is made once, as
    the row is (or as the checkpoint is read: ``state/codec.py``), and shared by every item of
    the row and every map of items (the store, the engine, the windows): one string per row
    instead of one per look-up; reading it is reading a slot (no call: it is read a few dozen
    times per item). ``token`` is made the first time it is asked for, then kept."""

    line: int
    tenant: str
    image_id: str
    source_region: str
    target_region: str
    name: str | None = None  # None: the source image's name
    description: str = ""
    project_name: str = ""  # the target project; "" means target_region
    source_project_name: str = ""  # "" means source_region
    agency_name: str | None = None  # None: from config
    vault_id: str | None = None
    priority: int = 0
    tags: str = ""  # ``key=value;key=value`` to set on the copy (over the source's tags)
    # "#line<N>" for a row the list rejected whose key could not be formed (no image id, a
    # malformed one, a duplicate): it is still an item, so that every line has a report row.
    line_tag: str = ""
    # Why the list's checks refused this row (``file:line: column: problem``); such a row is
    # a ``rejected`` item, never submitted, not even by --retry-failed: fix the line instead.
    problem: str = ""
    # Not columns (never stored, never compared): ``key``, made from the fields above as the
    # row is made (or as the checkpoint is read: ``state/codec.py``); ``token``, made from it
    # when first asked for and kept in ``_marker`` (the same sha256 was made 6 to 7 times per
    # item before; not a secret, nor named like one: tests/test_report.py).
    _identity: str = field(init=False, repr=False, compare=False)
    _marker: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = item_key(self.tenant, self.image_id, self.target_region) + self.line_tag
        object.__setattr__(self, "_identity", key)

    if TYPE_CHECKING:

        @property
        def key(self) -> str:
            """The item key (``tenant/image_id/target_region``, and a refused line's tag)."""
            return self._identity

    @property
    def token(self) -> str:
        """:func:`item_token` of ``key``, the marker placed in the copy's description."""
        try:
            return self._marker
        except AttributeError:  # not made yet
            token = item_token(self._identity)
            object.__setattr__(self, "_marker", token)
            return token

    @property
    def target_project(self) -> str:
        return self.project_name or self.target_region

    @property
    def source_project(self) -> str:
        return self.source_project_name or self.source_region

    def matches(
        self,
        tenants: frozenset[str],
        source_regions: frozenset[str],
        target_regions: frozenset[str],
    ) -> bool:
        """Whether the row passes the --tenant/--source-region/--target-region filters
        (an empty set lets everything through)."""
        return (
            (not tenants or self.tenant in tenants)
            and (not source_regions or self.source_region in source_regions)
            and (not target_regions or self.target_region in target_regions)
        )

    def digest(self) -> str:
        """Fingerprint of what the row asks for (not its line), to notice an edited row."""
        parts = [
            self.tenant,
            self.image_id,
            self.source_region,
            self.target_region,
            self.name or "",
            self.description,
            self.project_name,
            self.source_project_name,
            self.agency_name or "",
            self.vault_id or "",
            str(self.priority),
        ]
        if self.tags:  # only when given: digests of rows saved before the column stay valid
            parts.append(self.tags)
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


# ``Row.key`` reads the slot ``_identity`` itself: its descriptor, not a property (a property
# is a Python call; the key is read 20-30 times per item by the engine, the store and the
# events). Every way a row is made fills it: ``__init__`` (``__post_init__``), hence
# ``dataclasses.replace``, and the checkpoint's reader.
setattr(Row, "key", Row.__dict__["_identity"])  # noqa: B010 -- not a name mypy may see assigned


@dataclass(frozen=True, slots=True)
class Item:
    """The durable state of one item: what the checkpoint stores (slots: a run holds a few
    versions of each of 100,000 items; 208 bytes each instead of 528)."""

    row: Row
    phase: Phase = Phase.PENDING
    attempt: int = 1
    detail: str = ""
    listed: bool = True
    job_id: str | None = None
    target_image_id: str | None = None
    copy_name: str | None = None  # the name sent (row name or the source image's name)
    size_bytes: int | None = None
    submitted_at: float | None = None
    unknown_since: float | None = None
    finished_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    polls: int = 0
    # After the copy (engine/aftercopy.py); plain text so that the checkpoint keeps them as is.
    source_facts: str = ""  # the source image as preflight read it: JSON of the compared fields
    verify: str = ""  # "" (not yet), "ok", "mismatch", "skipped"
    mismatch: str = ""  # the fields that differ: ``min_ram: source 1024, copy 0; ...``
    carried: str = ""  # what was carried: ``tags:4,min_ram``
    undone: str = ""  # what was not done after the copy, and why (someone must look)
    notes: str = ""  # what to know (the source is shared with other projects...)

    @property
    def key(self) -> str:
        return self.row.key

    @property
    def token(self) -> str:
        return self.row.token

    def advance(self, phase: Phase, **changes: Any) -> Item:
        """Move forward within this attempt; raises TransitionError on a backward move."""
        if phase != self.phase and phase not in TRANSITIONS[self.phase]:
            raise TransitionError(f"{self.key}: {self.phase} -> {phase} is not allowed")
        detail = changes.get("detail")
        if detail:  # a few texts ("copied", "verifying: copied"...): one string each, not one
            changes["detail"] = intern(detail)  # per item kept for the whole run (memory)
        return _replace_item(self, phase=phase, **changes)

    def with_changes(self, **changes: Any) -> Item:
        """``dataclasses.replace(self, **changes)``, without its cost (a few times per item:
        each move, each poll); an unknown field is a TypeError all the same."""
        return _replace_item(self, **changes)

    def new_attempt(self, detail: str, **changes: Any) -> Item:
        """Back to pending for a fresh attempt (the previous copy is proven absent or refused)."""
        if self.phase == Phase.SUCCEEDED or self.phase.is_after_copy:
            raise TransitionError(f"{self.key}: a copied item is never copied again")
        return _replace_item(
            self,
            phase=Phase.PENDING,
            attempt=self.attempt + 1,
            detail=detail,
            job_id=None,
            unknown_since=None,
            finished_at=None,
            **changes,
        )


# ``dataclasses.replace(item, ...)`` at a fifth of its cost (core/frozen.py): a few times per
# item, each move and each poll's count.
_replace_item = replacer(Item)
