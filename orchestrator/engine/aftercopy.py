"""After the copy: verify the new image, carry what the copy API drops. No copy slot is held.

An item whose copy job said SUCCESS (or whose copy was adopted) becomes ``verifying`` with the
new image's id; its slot in the tenant's window is released then (the scheduler runs this
module after the lifecycle's driver returns). That phase is logged but not saved: the
checkpoint keeps the job (or what found the copy: a resume finds it again, never copies it
twice) until the item's next durable step, unless the item must wait first (the copy not yet
active, a call retried later, the line of checks, a step left for a later run, a stop): then
``verifying`` is saved before it waits (``RunContext.keep``), so that a resume re-polls no
copy that was made long ago. Two steps follow, each saved before the next:

``verifying``  wait (bounded, with back-off) until the new image is ``active`` in the target;
               compare it with the source as preflight read it (``Item.source_facts``,
               core/aftercopy.py); note when the source is shared with other projects.
               A broken copy (``killed``) or one never active fails the item, as before.
``carrying``   the source's tags (merged with the list's ``tags`` column, which wins) are
               created on the copy (``create`` overwrites: idempotent); ``min_ram``/``max_ram``
               are patched where they differ (a PATCH sets a value: idempotent). The source's
               tags are read from the tags API unless preflight's listing showed its ``tags``
               field empty (then it has none: one request less per item). When this step
               would do nothing (no tag from the list or the source, the copy's RAM limits
               already the source's), it is not saved: verifying's verdict is saved with
               ``succeeded``, one save and one event less per item.

A kill at any point resumes at the saved step and does it again; nothing here ever submits a
copy. Every call here goes to the request budget (and a connection slot) behind every poll
(``AFTER_COPY``): a resumed run with thousands of copies to check polls its copies in flight
first. A step the cloud refuses (403: a policy without ``ims:images:update``...) or cannot
do does not fail the copy: the item ends ``succeeded`` with what was not done and why
(``Item.undone``), and the run exits 1. A mismatch leaves ``verify = mismatch`` (exit 1).
Credentials refused as such (401, a bad signature, a skewed clock, an expired token) stop the
tenant as everywhere else; the item stays at its step for the next run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import anyio

from orchestrator import crashpoints
from orchestrator.core.advice import GET, LIST, UPDATE, is_permission, refused_for
from orchestrator.core.aftercopy import (
    RAM_KEYS,
    VERIFY_MISMATCH,
    VERIFY_OK,
    VERIFY_SKIPPED,
    carried_text,
    differences,
    facts_of,
    facts_text,
    join_notes,
    merged_tags,
    parse_tags,
    ram_changes,
    shared_note,
    untagged,
)
from orchestrator.core.backoff import look_backoff
from orchestrator.core.cloud import ACTIVE, AFTER_COPY, CloudError, ErrorKind, Image
from orchestrator.core.model import Item, Phase
from orchestrator.core.request_text import describe_copy, sent_name
from orchestrator.core.rules import DEAD_STATUSES
from orchestrator.engine.context import RunContext, log

T = TypeVar("T")
STEP_ATTEMPTS = 5  # tries of one call that fails for a passing reason, within one run


def copied(item: Item, image_id: str, detail: str, now: float, **changes: object) -> Item:
    """The item once its copy is made (job SUCCESS, or found by its token): ``verifying``
    (and ``changes``)."""
    return item.advance(
        Phase.VERIFYING,
        target_image_id=image_id,
        detail=f"verifying: {detail}",
        finished_at=now,
        error_code=None,
        error_message=None,
        **changes,
    )


@lru_cache(maxsize=8)
def _ignored(verify_ignore: tuple[str, ...], carry_ram: bool) -> frozenset[str]:
    """What verifying does not compare: ``[verify] ignore``, and the RAM limits when the
    carrying step sets them from the source (one set per config, not one per item)."""
    return frozenset(verify_ignore) | (frozenset(RAM_KEYS) if carry_ram else frozenset())


def _how(item: Item) -> str:
    """``copied`` / ``adopted...``: how the copy came, as the steps' details keep it."""
    return item.detail.partition(": ")[2] or "copied"


class _Refused(Exception):
    """A call of a step that will not succeed in this run (said in ``Item.undone``)."""


class _Later(Exception):
    """The tenant is stopped, or the cloud cannot answer now: the step is left for a run."""


@dataclass
class _Carried:
    tags: int = 0
    ram: tuple[str, ...] = ()


class AfterCopy:
    """Drives one item through ``verifying`` and ``carrying`` to ``succeeded``."""

    def __init__(self, ctx: RunContext, item: Item) -> None:
        self.ctx = ctx
        self.item = item
        self.cloud = ctx.clouds[item.row.tenant]
        self.after = ctx.config.after
        self.timing = ctx.config.timing
        self.backoff = look_backoff(self.timing.poll_min, self.timing.poll_max)
        self.copy: Image | None = None  # the copy as verifying read it (carrying is not re-read)
        self._facts: dict[str, str] | None = None  # source_facts read (see :meth:`_facts_of`)

    async def run(self) -> Item:
        try:
            if self.item.phase == Phase.VERIFYING:
                crashpoints.reach("verifying")
                await self.verify()
            if self.item.phase == Phase.CARRYING:
                crashpoints.reach("carrying")
                await self.carry()
        except _Later:  # left at its step for the next run: that step durable
            await self.ctx.keep(self.item)
        except anyio.get_cancelled_exc_class():  # a stop: the same
            await self.ctx.keep(self.item)
            raise
        return self.item

    # -- calls ----------------------------------------------------------------------------

    async def _call(self, what: str, action: str, call: Callable[[], Awaitable[T]]) -> T:
        """One call, tried again after a passing failure; _Refused or _Later otherwise.
        ``action``: the IAM action the call needs, named when it is refused."""
        for attempt in range(STEP_ATTEMPTS):
            try:
                return await call()
            except CloudError as error:
                if error.kind == ErrorKind.AUTH and is_permission(error):
                    raise _Refused(f"{what}: refused ({refused_for(error, action)})") from None
                if error.kind == ErrorKind.AUTH:
                    await self.ctx.block_tenant(self.item.row.tenant, error)
                    raise _Later from None
                if error.kind in (ErrorKind.PERMANENT, ErrorKind.NOT_FOUND, ErrorKind.QUOTA):
                    raise _Refused(f"{what}: {error}") from None
                log.warning(
                    "item.after_copy_retry", item=self.item.key, step=what, error=str(error)
                )
                if attempt + 1 < STEP_ATTEMPTS:
                    await self.ctx.keep(self.item)  # it waits: durable at its step first
                    await self.ctx.clock.sleep(self.backoff.delay(attempt))
        raise _Later

    async def _image(self, region: str, project: str, image_id: str) -> Image | None:
        images = await self._call(
            f"read image {image_id}",
            LIST,
            lambda: self.cloud.list_images(
                region, project=project, image_id=image_id, private_only=False, priority=AFTER_COPY
            ),
        )
        for image in images:
            if image.id == image_id:
                return image
        return None

    # -- verifying ------------------------------------------------------------------------

    async def _active_copy(self) -> Image | None:
        """The copy once active; None after the item was failed (broken or never active)."""
        row, image_id = self.item.row, self.item.target_image_id
        assert image_id is not None  # noqa: S101 -- verifying always carries it
        started = self.ctx.clock.now()
        looks = 0
        while True:
            image = await self._image(row.target_region, row.target_project, image_id)
            if image is not None and image.status == ACTIVE:
                self.copy = image
                return image
            if image is not None and image.status in DEAD_STATUSES:
                await self._fail(
                    "TARGET_IMAGE_" + image.status.upper(),
                    f"the copy {image_id} in {row.target_region} is {image.status}; "
                    "`ims-migrate cleanup --yes` deletes it, then run again with --retry-failed",
                    "copy ended broken",
                )
                return None
            if self.ctx.clock.now() - started > self.timing.job_deadline:
                await self._fail(
                    "JOB_DEADLINE",
                    f"image {image_id} not active after {self.timing.job_deadline:.0f} s",
                    "deadline",
                )
                return None
            await self.ctx.keep(self.item)  # it waits: ``verifying`` durable first
            await self.ctx.clock.sleep(self.backoff.delay(looks))
            looks += 1

    async def _fail(self, code: str, message: str, detail: str) -> None:
        failed = self.item.advance(
            Phase.FAILED, error_code=code, error_message=message, detail=detail
        )
        self.item = await self.ctx.save(failed)

    def _facts_of(self) -> dict[str, str]:
        """``source_facts`` read: once per item here, not once per step that asks (a JSON
        text). Not to be changed by the caller."""
        if self._facts is None:
            self._facts = facts_of(self.item.source_facts)
        return self._facts

    async def _source_facts(self) -> dict[str, str]:
        """The source as preflight read it; read now if no preflight kept it (an old state)."""
        if self.item.source_facts:
            return self._facts_of()
        row = self.item.row
        source = await self._image(row.source_region, row.source_project, row.image_id)
        if source is None:
            return {}
        self.item = self.item.with_changes(source_facts=facts_text(source))
        self._facts = None  # read from the new text when asked
        return dict(source.facts)

    async def verify(self) -> None:
        undone = []
        try:
            copy = await self._active_copy()
        except _Refused as refused:  # cannot read the copy: neither compared nor failed
            copy, undone = None, [f"not verified: {refused}"]
        if self.item.phase == Phase.FAILED:
            return
        verdict, mismatch = VERIFY_SKIPPED, ""
        if copy is not None:
            try:
                source = await self._source_facts()
            except _Refused as refused:
                source, undone = {}, [f"not verified: {refused}"]
            if source:
                row = self.item.row
                diffs = differences(
                    source,
                    copy,
                    name=sent_name(self.item),
                    description=describe_copy(row, self.item.token),
                    ignore=_ignored(self.after.verify_ignore, self.after.carry_ram),
                )
                verdict = VERIFY_MISMATCH if diffs else VERIFY_OK
                mismatch = "; ".join(diffs)
            elif not undone:
                undone = ["not verified: the source image could not be read"]
        notes = await self._shared()
        verified = {  # the item's fields that say the verdict (set with the next phase)
            "verify": verdict,
            "mismatch": mismatch,
            "undone": join_notes(self.item.undone, *undone),
            "notes": join_notes(self.item.notes, notes),
        }
        if verdict == VERIFY_MISMATCH:
            log.warning("item.verify_mismatch", item=self.item.key, mismatch=mismatch)
        if self._nothing_to_carry():
            # One save, not two: ``carrying`` would do nothing (its step needs no request), so
            # the verdict is saved with the end. A kill before it verifies again.
            await self._finish(self.item, _Carried(), [], **verified)
            return
        item = self.item.advance(Phase.CARRYING, detail=f"carrying: {_how(self.item)}", **verified)
        self.item = await self.ctx.save(item)
        crashpoints.reach("after_verify")

    def _nothing_to_carry(self) -> bool:
        """Whether ``carrying`` would neither send nor change anything: no tag from the list,
        a source preflight saw untagged (or tags not carried), and ``min_ram``/``max_ram`` as
        the source's on the copy verifying read (or not carried)."""
        row = self.item.row
        if row.tags and parse_tags(row.tags)[0]:
            return False
        source = self._facts_of()
        if self.after.carry_tags and not untagged(source):
            return False
        if not self.after.carry_ram:
            return True
        if self.copy is None:  # not read: carrying reads it
            return False
        change = ram_changes(source, self.copy)
        return not change.changes and change.problem is None

    async def _shared(self) -> str:
        """A note when the source image is shared with other projects (never a failure)."""
        row = self.item.row
        try:
            members = await self._call(
                "read the source's members",
                GET,
                lambda: self.cloud.image_members(
                    row.source_region, row.image_id, project=row.source_project, priority=AFTER_COPY
                ),
            )
        except _Refused as refused:
            return f"sharing not checked: {refused}"
        return shared_note(len(members)) if members else ""

    # -- carrying -------------------------------------------------------------------------

    async def carry(self) -> None:
        done = _Carried()
        undone: list[str] = []
        for step in (self._carry_tags, self._carry_ram):
            try:
                await step(done)
            except _Refused as refused:
                undone.append(str(refused))
        await self._finish(self.item, done, undone)

    async def _finish(
        self, item: Item, done: _Carried, not_done: list[str], **verified: str
    ) -> None:
        """``succeeded``, with what was carried and what was not (``not_done``);
        ``verified``: verifying's verdict, when it is saved with the end (one copy of the
        item, not two)."""
        item = item.advance(
            Phase.SUCCEEDED,
            carried=carried_text(done.tags, done.ram),
            undone=join_notes(verified.pop("undone", item.undone), *not_done),
            detail=_how(item),
            **verified,
        )
        if item.undone:
            log.warning("item.not_carried", item=item.key, undone=item.undone)
        self.item = await self.ctx.save(item)
        crashpoints.reach("after_terminal")

    async def _carry_tags(self, done: _Carried) -> None:
        row, image_id = self.item.row, self.item.target_image_id
        assert image_id is not None  # noqa: S101 -- carrying always carries it
        listed, _ = parse_tags(row.tags)
        source: dict[str, str] = {}
        # A source preflight listed with an empty ``tags`` has none to carry: not read again.
        if self.after.carry_tags and not untagged(self._facts_of()):
            source = await self._call(
                "tags not carried (reading the source's tags)",
                LIST,
                lambda: self.cloud.image_tags(
                    row.source_region, row.image_id, project=row.source_project, priority=AFTER_COPY
                ),
            )
        tags = merged_tags(source, listed)
        if not tags:
            return
        await self._call(
            "tags not carried",
            UPDATE,
            lambda: self.cloud.add_image_tags(
                row.target_region, image_id, tags, project=row.target_project, priority=AFTER_COPY
            ),
        )
        done.tags = len(tags)
        crashpoints.reach("after_tags")

    async def _carry_ram(self, done: _Carried) -> None:
        if not self.after.carry_ram:
            return
        row, image_id = self.item.row, self.item.target_image_id
        assert image_id is not None  # noqa: S101 -- carrying always carries it
        copy = self.copy or await self._image(row.target_region, row.target_project, image_id)
        if copy is None:
            raise _Refused(f"min_ram/max_ram not carried: the copy {image_id} is gone")
        change = ram_changes(self._facts_of(), copy)
        if change.problem:
            raise _Refused(f"min_ram/max_ram not carried: {change.problem}")
        if change.changes:
            await self._call(
                "min_ram/max_ram not carried",
                UPDATE,
                lambda: self.cloud.update_image(
                    row.target_region,
                    image_id,
                    change.changes,
                    project=row.target_project,
                    priority=AFTER_COPY,
                ),
            )
        done.ram = tuple(change.changes)
