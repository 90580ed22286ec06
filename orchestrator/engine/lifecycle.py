"""One item's copy, from the saved intent to a terminal state: submit, poll, reconcile, adopt.

The rules that keep a copy from being made twice (design notes, I2) live here:

* the intent is durable before the POST, the job id before the first poll;
* a POST whose outcome is unknown is never sent again: the item goes to ``reconciling`` and
  looks for its copy in the target region by name and token; only after ``settle`` seconds
  with nothing found is the copy proven absent and a new attempt allowed;
* an unknown job id (404) is reconciled the same way;
* while it reconciles, the item keeps its slot in the tenant's window.

Cloud errors are data here: every CloudError becomes a state of the item, a back-off, or a
blocked tenant. Only bugs escape.

(Over 400 lines: one item's state machine, whose phases share the rules above; the pure parts,
the request, the polling schedule and the back-offs, live in orchestrator/core.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio

from orchestrator import crashpoints
from orchestrator.core.advice import COPY, is_permission, quota_full, refused_for
from orchestrator.core.backoff import look_backoff, retry_backoff
from orchestrator.core.cloud import (
    ACTIVE,
    JOB_FAIL,
    JOB_SUCCESS,
    SEND_STOP,
    STOPPED,
    CloudError,
    ErrorKind,
    Image,
    Job,
)
from orchestrator.core.model import Item, Phase
from orchestrator.core.polling import Polling, PollState, next_delay
from orchestrator.core.request_text import copy_request, sent_name
from orchestrator.core.rules import DEAD_STATUSES
from orchestrator.engine.aftercopy import copied
from orchestrator.engine.context import MAX_AUTOMATIC_ATTEMPTS, RunContext, log
from orchestrator.engine.targets import Found
from orchestrator.engine.window import Window

FAILED_POLLS = 3  # failed polls of an overdue job (none answered) before its deadline holds


@dataclass(frozen=True)
class Outcome:
    """How a drive ended: the item's state, and when it may be submitted again if pending."""

    item: Item
    retry_at: float = 0.0


class Driver:
    """Drives one item while it holds a slot of ``window``."""

    def __init__(
        self,
        ctx: RunContext,
        window: Window,
        item: Item,
        polled: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.window = window
        self.item = item
        self.polled = polled  # called once, after the first poll (answered or not)
        self.cloud = ctx.clouds[item.row.tenant]
        self.timing = ctx.config.timing
        # The clock's own function (time.time on a real run): no frame of ours around it.
        self._now = ctx.clock.now
        self.retry_backoff = retry_backoff(self.timing.poll_min, self.timing.backoff_max)
        self.look_backoff = look_backoff(self.timing.poll_min, self.timing.poll_max)

    # -- helpers ------------------------------------------------------------------------------

    async def _save(self, item: Item, event: str | None = None, **fields: object) -> Item:
        self.item = await self.ctx.save(item, event, **fields)
        return self.item

    def _backoff(self, attempt: int) -> float:
        return self.retry_backoff.delay(attempt, self.ctx.rng)

    def _started(self) -> float:
        return self.item.submitted_at or self.item.unknown_since or self._now()

    def _route(self) -> tuple[str, str]:
        return self.item.row.source_region, self.item.row.target_region

    def _overdue(self, now: float) -> bool:
        """Past the job deadline, counted from the submission (or the first sign of an unknown
        outcome); never with neither known."""
        begun = self.item.submitted_at or self.item.unknown_since
        if not begun:
            return False
        return now - begun > self.timing.job_deadline

    async def _fail(self, code: str | None, message: str, detail: str = "") -> Outcome:
        item = self.item.advance(
            Phase.FAILED,
            error_code=code,
            error_message=message,
            detail=detail or "failed",
            finished_at=self._now(),
        )
        await self._save(item)
        crashpoints.reach("after_terminal")
        return Outcome(self.item)

    async def _succeed(self, image_id: str, detail: str, **changes: object) -> Outcome:
        """The copy is made: ``verifying``, and the slot is released (engine/aftercopy.py).

        Logged, not saved: the checkpoint keeps the job (or the state that found the copy)
        until the checks' next durable step, or until they wait (``RunContext.keep``). A
        resume from it finds the copy again (the job's SUCCESS, or the token in the target):
        never a second copy, at most one more poll (design I2 asks nothing of this id)."""
        now = self._now()
        item = copied(self.item, image_id, detail, now, **changes)
        started = self.item.submitted_at
        self.item = self.ctx.entered(item, duration=round(now - started, 3) if started else None)
        if started and detail == "copied":
            self.ctx.speed.learn(self._route(), item.size_bytes, self._now() - started)
        crashpoints.reach("after_success")
        return Outcome(self.item)

    async def _retry_later(
        self, detail: str, wait: float, *, limited: bool = False, **changes: object
    ) -> Outcome:
        """The copy is proven absent (refused or failed): a new attempt, after ``wait``.

        ``limited`` retries (jobs that failed with a retryable code) give up after
        MAX_AUTOMATIC_ATTEMPTS; a refused request (back-pressure, throttling) never fails the
        item: it waits for the cloud to have room.
        """
        if limited and self.item.attempt >= MAX_AUTOMATIC_ATTEMPTS:
            return await self._fail(
                self.item.error_code or "TOO_MANY_ATTEMPTS",
                f"gave up after {self.item.attempt} attempts; last: {detail}",
            )
        await self._save(self.item.new_attempt(detail, **changes))
        return Outcome(self.item, retry_at=self._now() + wait)

    async def _auth_stop(self, error: CloudError) -> Outcome:
        await self.ctx.block_tenant(self.item.row.tenant, error)
        return Outcome(self.item)

    # -- entry ----------------------------------------------------------------------------------

    def run(self) -> Coroutine[Any, Any, Outcome]:
        """Drive from the current phase until terminal, pending again, or the run stops.

        The coroutine of the phase's own step, for the caller to await: not a coroutine that
        awaits it, whose frame every resume of the drive (each answer, each poll's wake) would
        pass through on its way down."""
        phase = self.item.phase
        if phase == Phase.PENDING:
            return self.submit()
        if phase == Phase.SUBMITTING:
            return self._restarted()
        if phase == Phase.RUNNING:
            return self.poll_job()
        if phase == Phase.RECONCILING:
            return self.reconcile()
        if phase == Phase.ADOPTED:
            return self.poll_image()
        return self._as_it_is()

    async def _restarted(self) -> Outcome:
        """Saved intent, no recorded answer (a crash or kill): the POST may have happened."""
        since = self.item.submitted_at or self._now()
        why = "a restart (the copy request may have been sent)"
        await self._save(
            self.item.advance(
                Phase.RECONCILING, unknown_since=since, detail=self._waiting(why, since)
            )
        )
        return await self.reconcile()

    async def _as_it_is(self) -> Outcome:
        return Outcome(self.item)

    # -- submit ---------------------------------------------------------------------------------

    async def _absent(self) -> Outcome | None:
        """None once this run has seen the target without the item's copy (a listing at most
        ``settle`` old); else how the drive ends: the copy adopted, or a wait when the cloud
        cannot say. The checkpoint may be wrong (a second state dir, a damaged journal): the
        cloud is asked before every copy request (design I2)."""
        try:
            found = await self.ctx.targets.find(self.item)
        except CloudError as error:
            if error.kind == ErrorKind.AUTH:
                return await self._auth_stop(error)
            log.warning(
                "item.target_unknown",
                tenant=self.item.row.tenant,
                item=self.item.key,
                error_message=str(error),
            )
            return Outcome(self.item, retry_at=self._now() + self._backoff(self.item.attempt))
        if found is None:
            return None
        return await self._adopt(found)

    async def _adopt(self, found: Image | Found) -> Outcome:
        """This item's copy is in the target: follow it, never copy again."""
        if found.status == ACTIVE:
            return await self._succeed(found.id, "adopted")
        await self._save(
            self.item.advance(Phase.ADOPTED, target_image_id=found.id, detail="adopted")
        )
        return await self.poll_image()

    async def submit(self) -> Outcome:
        if self.ctx.no_more_submits.is_set():
            return Outcome(self.item)
        settled = await self._absent()
        if settled is not None or self.ctx.no_more_submits.is_set():
            return settled or Outcome(self.item)
        # Another run may own the state dir now: the store checks the lock before it writes the
        # intent (LockLost, exit 75), and the POST follows only a written intent.
        crashpoints.reach("before_intent")
        request = copy_request(self.item, self.ctx.config.agency_name)
        intent = self.item.advance(
            Phase.SUBMITTING,
            submitted_at=self._now(),
            detail="submitting",
            error_code=None,
            error_message=None,
        )
        row = self.item.row
        job_id: str | None = None
        failure: CloudError | None = None
        answered = 0.0  # when the copy request was answered
        # One shield from the intent's save to the job id's: a stop lands after the save, not
        # inside it, and a POST handed to a connection runs to its answer or its own timeout
        # (counted from then), even when the run is told to stop, so that its job id is saved
        # rather than left to a long reconciliation. Only the wire bounds it. While the POST
        # still waits for the request budget or a connection, a stop takes it back unsent
        # (SEND_STOP: NOT_SENT, code STOPPED), never an unknown outcome. (One scope, not one
        # per step: there is no await between the steps that a stop could land on.)
        with anyio.CancelScope(shield=True):
            if not await self.ctx.save_intent(intent):
                return Outcome(self.item)  # the stop came first: nothing written, nothing sent
            self.item = intent
            crashpoints.reach("after_intent")
            if self.ctx.no_more_submits.is_set():
                # The stop came while the intent was being written: no POST once it is
                # handled. Nothing was sent, so the copy is provably absent: a new attempt,
                # saved even while cancelled (the drivers stopped so commit together: one
                # write for them all).
                await self._save(self.item.new_attempt("stopped before sending"))
                return Outcome(self.item)
            token = SEND_STOP.set(self.ctx.no_more_submits)  # the client checks it last
            try:
                job_id = await self.cloud.copy_image(
                    row.source_region, row.image_id, request, project=row.source_project
                )
            except CloudError as error:
                failure = error
            finally:
                SEND_STOP.reset(token)
            if failure is None:
                answered = self._now()
                self.ctx.counters.submissions += 1
                crashpoints.reach("after_reply")
                await self._save(self.item.advance(Phase.RUNNING, job_id=job_id, detail="copying"))
        if failure is not None:
            if failure.kind != ErrorKind.NOT_SENT:
                self.ctx.counters.submissions += 1
            return await self._submit_failed(failure)
        self.window.started()
        return await self.poll_job(answered)

    def _waiting(self, why: str, since: float) -> str:
        """What a reconciling item waits for, and until when (status shows it as is)."""
        until = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(since + self.timing.settle))
        region = self.item.row.target_region
        return f"reconciling: looking for the copy in {region} until {until} after {why}"

    async def _unknown(self, why: str) -> Outcome:
        self.ctx.counters.reconciliations += 1
        now = self._now()
        await self._save(
            self.item.advance(Phase.RECONCILING, unknown_since=now, detail=self._waiting(why, now))
        )
        return await self.reconcile()

    async def _submit_failed(self, error: CloudError) -> Outcome:
        if error.code == STOPPED:  # not sent: the stop came while it waited for its turn
            with anyio.CancelScope(shield=True):
                await self._save(self.item.new_attempt("stopped before sending"))
            return Outcome(self.item)
        kind = error.kind
        fields = {"error_code": error.code, "error_message": error.message}
        if kind == ErrorKind.UNKNOWN:
            return await self._unknown(f"{error} on the copy request")
        if kind == ErrorKind.BACK_PRESSURE:
            self.ctx.counters.back_pressure += 1
            wait = self.window.back_pressure(self._now(), self.ctx.rng)
            return await self._retry_later(f"cloud busy ({error.code}): back-pressure", wait)
        if kind in (ErrorKind.TRANSIENT, ErrorKind.NOT_SENT):
            return await self._retry_later(
                f"not accepted ({error}): will retry",
                self._backoff(self.item.attempt),
                error_code=error.code,
                error_message=error.message,
            )
        if kind == ErrorKind.AUTH:
            why = (
                f"copy refused: {refused_for(error, COPY)}"
                if is_permission(error)  # the IAM user may not copy: not the key
                else f"credentials refused: {error}"
            )
            await self._save(self.item.new_attempt(why, **fields))
            return await self._auth_stop(error)
        if kind == ErrorKind.QUOTA:
            key = (self.item.row.tenant, self.item.row.target_region)
            self.ctx.quota_blocked[key] = str(error)  # the terminal says it (cli/run.py)
            await self._save(self.item.new_attempt(quota_full(str(error), *key), **fields))
            return Outcome(self.item)
        return await self._fail(error.code, error.message, "refused by the cloud")

    # -- poll the job ---------------------------------------------------------------------------

    async def poll_job(self, answered: float | None = None) -> Outcome:
        """``answered``: when this run's copy request was answered (the job exists since): its
        route's copies may tell when it begins to move (core/speed.py StartDelays)."""
        row = self.item.row
        job_id = self.item.job_id
        assert job_id is not None  # noqa: S101 -- RUNNING always carries the job id
        adaptive = self.ctx.config.scheduling.polling == Polling.ADAPTIVE
        clock, speed, rng, route = self.ctx.clock, self.ctx.speed, self.ctx.rng, self._route()
        answered = answered if adaptive else None  # the naive strategy learns nothing
        state = self._poll_state(answered)
        size, region, project = self.item.size_bytes, row.source_region, row.source_project
        poll_min, poll_max = self.timing.poll_min, self.timing.poll_max
        # Answered polls: added to the item once, as the drive leaves this loop (each one a
        # copy of the item otherwise; a stop saves nothing here either way).
        polls = failed = 0
        now = clock.now()  # read again as each poll ends: no await between it and the next
        while True:
            expected = speed.expected(route, size) if adaptive else None
            # Judged only once a poll has shown the job unfinished: a copy that ended while no
            # run was going (a resume after a long stop) is taken as it ended, not failed unseen.
            # Polls that keep failing (not 404) are bounded too (I7): after a few, the deadline.
            if (polls or failed >= FAILED_POLLS) and self._overdue(now):
                self._count_polls(polls)
                return await self._fail(
                    "JOB_DEADLINE",
                    f"job {job_id} still not finished after {self.timing.job_deadline:.0f} s; "
                    "it may still be running in the cloud: --retry-failed adopts it if it is",
                    "deadline",
                )
            delay = next_delay(
                state,
                now,
                expected_duration=expected,
                poll_min=poll_min,
                poll_max=poll_max,
                jitter=rng.random(),
                adaptive=adaptive,
            )
            await clock.sleep(delay)
            crashpoints.reach("polling")
            try:
                job = await self.cloud.get_job(
                    region,
                    job_id,
                    project=project,
                    priority=self._poll_priority(state.started_at, expected),
                )
            except CloudError as error:
                self._first_poll_done()
                if error.kind in (ErrorKind.NOT_FOUND, ErrorKind.AUTH):
                    self._count_polls(polls)
                if error.kind == ErrorKind.NOT_FOUND:
                    return await self._unknown(f"job {job_id} unknown to the cloud")
                if error.kind == ErrorKind.AUTH:
                    return await self._auth_stop(error)
                failed += 1
                now = clock.now()
                state = state.observe(now, None)
                continue
            self._first_poll_done()
            polls += 1
            now = clock.now()
            if self.ctx.counters.poll_answered(now):
                log.info("run.first_poll", tenant=row.tenant, item=self.item.key)
            seen, state = state, state.observe(now, job.progress)
            if job.status == JOB_SUCCESS:
                self._learn_start(seen, answered)
                return await self._job_succeeded(job, polls)
            if job.status == JOB_FAIL:
                self._count_polls(polls)
                return await self._job_failed(job)

    def _poll_state(self, answered: float | None) -> PollState:
        """The first poll state: what the route's copies tell of when this one begins to move
        after ``answered`` (its request's answer), if anything."""
        told = None if answered is None else self.ctx.speed.start_delay(self._route())
        if told is None or answered is None:
            return PollState(started_at=self._started())
        return PollState(self._started(), moves_from=answered + told[0], moves_within=told[1])

    def _learn_start(self, seen: PollState, answered: float | None) -> None:
        """A copy seen ended: when it began to move after ``answered``, if its polls before the
        end gave its rate."""
        began = None if answered is None else seen.began()
        if began is not None and answered is not None:
            self.ctx.speed.learn_start(self._route(), began - answered)

    def _count_polls(self, polls: int) -> None:
        """The item with ``polls`` more answered polls of its job."""
        if polls:
            self.item = self.item.with_changes(polls=self.item.polls + polls)

    def _first_poll_done(self) -> None:
        if self.polled is not None:
            polled, self.polled = self.polled, None
            polled()

    def _poll_priority(self, started_at: float, expected: float | None) -> float:
        """Where this poll stands when the request budget cannot serve every poll at once:
        the seconds until the job's predicted end (a job near its end goes first); a job
        with no prediction waits behind them, like a far-off probe."""
        if expected is None:
            return self.timing.poll_max
        return max(0.0, started_at + expected - self._now())

    async def _job_succeeded(self, job: Job, polls: int) -> Outcome:
        """``polls``: answered polls not yet counted on the item (they are with its move to
        verifying: one copy of the item, not two)."""
        if not job.image_id:
            self._count_polls(polls)
            return await self._unknown(f"job {job.job_id} succeeded without naming the new image")
        # Verifying waits until the copy is active.
        return await self._succeed(job.image_id, "copied", polls=self.item.polls + polls)

    async def _job_failed(self, job: Job) -> Outcome:
        code = job.error_code or "JOB_FAIL"
        reason = job.fail_reason or "the copy job failed without a reason"
        if code in self.ctx.config.retry_fail_codes:
            if code == "IMG.0060":
                self.ctx.counters.back_pressure += 1
                wait = self.window.back_pressure(self._now(), self.ctx.rng)
            else:
                wait = self._backoff(self.item.attempt)
            return await self._retry_later(
                f"job failed with {code}: retrying",
                wait,
                limited=True,
                error_code=code,
                error_message=reason,
            )
        return await self._fail(code, reason, f"job {job.job_id} failed")

    # -- the image in the target ----------------------------------------------------------------

    async def _find_target(self, image_id: str) -> Image | None:
        row = self.item.row
        images = await self.cloud.list_images(
            row.target_region, project=row.target_project, image_id=image_id, private_only=False
        )
        return images[0] if images else None

    async def poll_image(self) -> Outcome:
        """Wait for an adopted copy (found by its token) to be active."""
        image_id = self.item.target_image_id
        assert image_id is not None  # noqa: S101 -- set before any caller gets here
        quiet = 0
        looked = False  # a listing answered: a failed one says nothing about the deadline
        while True:
            try:
                image = await self._find_target(image_id)
                looked = True
            except CloudError as error:
                if error.kind == ErrorKind.AUTH:
                    return await self._auth_stop(error)
                image = None
            if image is not None and image.status == ACTIVE:
                return await self._succeed(image_id, "adopted")
            if image is not None and image.status in DEAD_STATUSES:
                return await self._fail(
                    "TARGET_IMAGE_" + image.status.upper(),
                    f"the copy {image_id} in {self.item.row.target_region} is {image.status}; "
                    "delete it, then run again with --retry-failed",
                    "copy ended broken",
                )
            if looked and self._overdue(self._now()):
                return await self._fail(
                    "JOB_DEADLINE",
                    f"image {image_id} not active after {self.timing.job_deadline:.0f} s",
                    "deadline",
                )
            quiet += 1
            await self.ctx.clock.sleep(self.look_backoff.delay(quiet - 1))

    # -- reconcile an unknown outcome -----------------------------------------------------------

    async def reconcile(self) -> Outcome:
        row = self.item.row
        name = sent_name(self.item)
        since = self.item.unknown_since or self._now()
        checks = 0
        while True:
            try:
                images = await self.cloud.list_images(
                    row.target_region, project=row.target_project, name=name
                )
            except CloudError as error:
                if error.kind == ErrorKind.AUTH:
                    return await self._auth_stop(error)
                images = None
            if images is not None:
                mine = [image for image in images if self.item.token in image.description]
                live = [image for image in mine if image.status not in DEAD_STATUSES]
                if live:
                    return await self._adopt(live[0])
                if self._now() - since >= self.timing.settle:
                    stale = f"; {len(mine)} broken copy(ies) left to clean up" if mine else ""
                    return await self._retry_later(
                        f"copy proven absent after {self.timing.settle:.0f} s{stale}", 0.0
                    )
            checks += 1
            left = max(0.0, since + self.timing.settle - self._now())
            pause = self.look_backoff.delay(checks - 1)
            await self.ctx.clock.sleep(max(min(pause, left), self.timing.poll_min * 0.5))
