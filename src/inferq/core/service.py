"""JobService: the one entry point every dialect calls.

Dialects translate their request to a :class:`~inferq.core.work.ChatRequest`
and call ``submit`` / ``run_sync`` / ``get`` / ``cancel`` here; they render what
comes back. The service validates against the model catalog, writes through the
store (durably, before answering) and wakes workers through the event hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inferq.core.errors import Conflict, DeadlineExceeded, NotFound
from inferq.core.events import JobEvents, Subscription
from inferq.core.ids import new_uuid7
from inferq.core.inputs import check_priority
from inferq.core.limits import QueueBounds, check_queue
from inferq.core.models import ActiveCount, Job, JobError, JobFilter, QueueMetrics
from inferq.core.ports import ClaimOrder, Ending, JobQueue
from inferq.core.states import CANCELLABLE_STATES, CLASS_LABELS, JobState, ServiceClass
from inferq.core.throughput import Series, series, window
from inferq.core.work import ChatResult, Request

log = logging.getLogger("inferq.jobs")

#: how often a waiter re-reads the store when no event arrives
POLL_INTERVAL = 0.5


class ModelCatalog(Protocol):
    """What the service needs to know about models (the registry provides it)."""

    def validate(self, model: str, request: Request) -> None:
        """Raise a ClientError when ``model`` cannot run ``request``."""

    def names(self) -> Collection[str]:
        """The configured model names."""


class Offer(Protocol):
    """A worker's next claim, handed to a submit to make with its insert."""

    @property
    def order(self) -> ClaimOrder: ...

    def done(self, claimed: Sequence[Job]) -> None:
        """Start the jobs the claim took (none when the insert failed); the offer ends."""


class SlotOffers(Protocol):
    """A worker in this process that can claim in the transaction of a new job's insert
    (:class:`inferq.runner.worker.Worker`)."""

    async def offer(self, model: str) -> Offer | None:
        """The claim to make now for ``model``, or None (it does not run here, no slot of
        it is free, or another claim of it is under way for long)."""


class NodePresence(Protocol):
    """Whether the nodes that run a model are there (:class:`~inferq.core.node_work.NodeWork`)."""

    async def check_connected(self, model: str) -> None:
        """Raise :class:`~inferq.core.nodes.NoNodeConnected` when only nodes run ``model``
        and no node serving it is connected."""


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    max_attempts: int = 4
    #: how much queued work a submit may join (:func:`inferq.core.limits.check_queue`)
    queue: QueueBounds = field(default_factory=QueueBounds)


@dataclass(kw_only=True, eq=False)
class JobService:
    store: JobQueue
    models: ModelCatalog
    events: JobEvents
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    clock: Callable[[], float] = time.time
    #: told of each job that ended before any worker ran it (cancelled or expired while
    #: queued): a worker counts the ends of what it runs, this counts the others
    ended_unrun: Callable[[Job], None] | None = None
    #: this process's worker: a sync job it has a free slot for is claimed in the
    #: transaction that stores it (one commit, no wait for the claim loop)
    offers: SlotOffers | None = None
    #: the nodes of the models only nodes run: a job a client waits for (INTERACTIVE) is
    #: refused at once while no node serving its model is connected, rather than waiting
    #: out its deadline; other work queues for a node (None: nothing is refused)
    nodes: NodePresence | None = None

    async def submit(
        self,
        *,
        tenant: str,
        model: str,
        request: Request,
        origin: str,
        service_class: ServiceClass = ServiceClass.ASYNC,
        priority: int = 0,
        info: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        timeout: float | None = None,
        job_id: str | None = None,
        start_now: bool = False,
    ) -> Job:
        """Validate and durably queue a job; return it once committed.

        ``job_id`` (a new time-ordered UUID when None, :func:`~inferq.core.ids.new_uuid7`)
        lets a caller subscribe to the job's events before any worker can claim it.
        ``start_now``: a sync job whose caller has done so (:meth:`watch`) is claimed in
        its insert's transaction when this process's worker has a free slot for it
        (:attr:`offers`), so it may start, and send its first events, before this
        returns. A sync job (INTERACTIVE) for a model only nodes run is refused while none
        serving it is connected (:attr:`nodes`).
        """
        check_priority(priority)
        self.models.validate(model, request)
        if service_class is ServiceClass.INTERACTIVE and self.nodes is not None:
            await self.nodes.check_connected(model)
        await check_queue(self.store, self.limits.queue, tenant)
        now = self.clock()
        job = Job(
            id=job_id or new_uuid7(),
            tenant=tenant,
            model=model,
            origin=origin,
            service_class=service_class,
            priority=priority,
            state=JobState.QUEUED,
            request=request,
            created_at=now,
            info=dict(info or {}),
            inputs=inputs,
            max_attempts=self.limits.max_attempts,
            deadline_at=now + timeout if timeout is not None else None,
        )
        offer = None
        if start_now and self.offers is not None and service_class is ServiceClass.INTERACTIVE:
            offer = await self.offers.offer(model)
        if offer is not None:
            return await self._insert_claiming(job, offer, now)
        stored = await self.store.insert_job(job)
        _log_queued(stored)
        self.events.job_submitted()
        return stored

    async def _insert_claiming(self, job: Job, offer: Offer, now: float) -> Job:
        """Store ``job`` with the claim ``offer`` makes (one transaction where the store
        can). The claimed jobs start once it commits, even when this caller is cancelled
        meanwhile; this process's workers are woken only if the new job still waits (the
        store tells other processes of the insert as of any other)."""
        stored = asyncio.ensure_future(self.store.insert_and_claim(job, offer.order, now=now))

        def committed(task: asyncio.Future[tuple[Job, list[Job]]]) -> None:
            if task.cancelled() or task.exception() is not None:
                offer.done(())
                return
            inserted, claimed = task.result()
            _log_queued(inserted)
            offer.done(claimed)
            if all(j.id != job.id for j in claimed):
                self.events.job_submitted()

        stored.add_done_callback(committed)
        inserted, _ = await asyncio.shield(stored)
        return inserted

    async def get(self, job_id: str, *, tenant: str | None) -> Job:
        job = await self.store.get_job(job_id, tenant=tenant)
        if job is None:
            raise NotFound(f"job {job_id} not found", param="request_id")
        return job

    async def list(self, flt: JobFilter) -> list[Job]:
        return await self.store.list_jobs(flt)

    async def cancel(self, job_id: str, *, tenant: str | None) -> Job:
        """Cancel a queued or running job; Conflict when it already ended."""
        outcome = await self.store.finish(
            job_id,
            Ending(JobState.CANCELLED, JobError("cancelled", "the job was cancelled")),
            tenant=tenant,
            now=self.clock(),
        )
        if outcome is None:
            raise NotFound(f"job {job_id} not found", param="request_id")
        before, after = outcome
        if before.state not in CANCELLABLE_STATES:
            raise Conflict(f"job {job_id} is already {before.state.value}", param="request_id")
        log.info("job %s cancelled (was %s)", job_id, before.state.value)
        self._ended_unrun(before, after)
        self.events.job_cancelled(job_id)
        return after

    async def delete(self, job_id: str, *, tenant: str) -> Job:
        """Stop the job if it has not ended, then remove it; NotFound when there is none."""
        job = await self.get(job_id, tenant=tenant)
        if not job.state.terminal:
            with contextlib.suppress(Conflict):
                job = await self.cancel(job_id, tenant=tenant)
        if not await self.store.delete_job(job_id, tenant=tenant):
            raise NotFound(f"job {job_id} not found", param="request_id")
        log.info("job %s deleted (was %s)", job_id, job.state.value)
        return job

    async def clear(self, *, tenant: str, model: str) -> int:
        """Cancel every queued job of ``model`` for the tenant."""
        cancelled = await self.store.cancel_queued(tenant=tenant, model=model, now=self.clock())
        log.info("cleared %d queued jobs (tenant=%s model=%s)", len(cancelled), tenant, model)
        if self.ended_unrun is not None:
            for job in cancelled:
                self.ended_unrun(job)
        return len(cancelled)

    async def metrics(self, *, tenant: str, model: str | None) -> QueueMetrics:
        return await self.store.metrics(tenant=tenant, model=model)

    async def active(self, *, tenant: str | None) -> Sequence[ActiveCount]:
        """The tenant's (None: every tenant's) unfinished jobs, counted by model, class,
        state and kind."""
        return await self.store.count_active(tenant=tenant)

    async def throughput(self, *, tenant: str | None, span: float, bucket: float) -> Series:
        """Jobs and tokens per second that ended over the last ``span`` seconds, one
        point per ``bucket`` seconds (the tenant's, or every tenant's for None)."""
        now = self.clock()
        since, until = window(now, span=span, bucket=bucket)
        counts = await self.store.finished_counts(
            tenant=tenant, since=since, until=until, bucket=bucket
        )
        return series(counts, since=since, until=until, bucket=bucket, now=now)

    async def wait(
        self,
        job_id: str,
        *,
        tenant: str | None,
        deadline: float,
        watching: tuple[Subscription, Job] | None = None,
    ) -> Job:
        """Wait until the job ends; on ``deadline`` expire it and raise.

        ``watching``: a subscription to the job's events opened before the job could
        end (before it was inserted, see :meth:`watch`) and the job as inserted; the
        wait then starts from that job instead of reading the store, and closes the
        subscription when it returns.
        """
        if watching is None:
            sub = self.events.subscribe(job_id, text=False)
            known: Job | None = None
        else:
            sub, known = watching
        try:
            job = known if known is not None else await self.get(job_id, tenant=tenant)
            while not job.state.terminal:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return await self._expire(job)
                event = await sub.next(min(remaining, POLL_INTERVAL))
                if isinstance(event, str):
                    # A piece of generated text: the job still runs. Reading the
                    # store for each token would only compete with the engine.
                    continue
                if isinstance(event, Job):
                    # this process's worker committed its end and handed the job over
                    job = event
                    continue
                job = await self.get(job_id, tenant=tenant)
            return job
        finally:
            sub.close()

    def watch(self, *, text: bool) -> tuple[str, Subscription]:
        """A new job id and a subscription to its events, for a caller that waits for the
        job it is about to submit under that id: no event of the job can be missed, so
        the wait needs no first read of the store (:meth:`wait`'s ``watching``). The
        caller closes the subscription if the job is not submitted. ``text``: the caller
        streams the job's text (:meth:`stream`), from whichever process generates it."""
        job_id = new_uuid7()
        return job_id, self.events.subscribe(job_id, finished=True, text=text)

    async def stream(
        self,
        job_id: str,
        *,
        tenant: str | None,
        deadline: float,
        watching: Subscription | None = None,
    ) -> AsyncIterator[str | Job]:
        """Yield the job's text as it is generated, then the job as it ended, last.

        Pieces come from this process's worker or, relayed, from another process's
        (:class:`~inferq.core.events.TextRelay`). What did not arrive as pieces (all of
        it, where no channel relays them) is yielded from the result at the end.
        ``watching``: the job's subscription from :meth:`watch` (opened before it was
        submitted, so no piece is missed), closed here once the stream ends.
        """
        sub = watching if watching is not None else self.events.subscribe(job_id)
        streamed: list[str] = []
        try:
            while True:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    job = await self._expire(await self.get(job_id, tenant=tenant))
                else:
                    event = await sub.next(min(remaining, POLL_INTERVAL))
                    if isinstance(event, str):
                        streamed.append(event)
                        yield event
                        continue
                    # the job as this process's worker committed its end, or a read
                    job = event if isinstance(event, Job) else await self.get(job_id, tenant=tenant)
                if job.state.terminal:
                    if isinstance(job.result, ChatResult):
                        rest = _rest(job.result.text, "".join(streamed))
                        if rest:
                            yield rest
                    yield job
                    return
        finally:
            sub.close()

    def _ended_unrun(self, before: Job, after: Job) -> None:
        if before.state is JobState.QUEUED and self.ended_unrun is not None:
            self.ended_unrun(after)

    async def _expire(self, job: Job) -> Job:
        """Stop a job that ran past its deadline and raise DeadlineExceeded.

        Returns the job instead when it ended before it could be stopped.
        """
        outcome = await self.store.finish(
            job.id,
            Ending(JobState.EXPIRED, JobError("timeout", "the request timed out")),
            tenant=job.tenant,
            now=self.clock(),
        )
        if outcome is not None and outcome[0].state.terminal:
            return outcome[0]
        if outcome is not None:
            self._ended_unrun(*outcome)
        log.info("job %s expired at its deadline", job.id)
        self.events.job_cancelled(job.id)
        raise DeadlineExceeded(f"the request did not finish within its deadline (job {job.id})")


def _log_queued(job: Job) -> None:
    log.info(
        "job %s queued (tenant=%s model=%s class=%s priority=%d)",
        job.id,
        job.tenant,
        job.model,
        CLASS_LABELS[job.service_class],
        job.priority,
    )


def _rest(text: str, streamed: str) -> str:
    """What of the final ``text`` the pieces ``streamed`` so far did not carry: all of it
    when none came, the tail when they are its beginning, nothing when they differ (a
    stream of another form than the text, such as a function call's)."""
    return text[len(streamed) :] if text.startswith(streamed) else ""
