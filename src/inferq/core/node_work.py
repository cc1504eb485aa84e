"""The node protocol's work: what a node's claims, heartbeats and results do.

A node claims through the same :meth:`~inferq.core.ports.JobQueue.claim` as the
in-process workers, so one scheduling order holds for all work. Its lease is fenced
like theirs: the owner is ``node:<node id>:<session>`` (the session is the node
process's own random id; the node id comes from its token, so no node can write
under another's lease) and the attempt is the job's. A heartbeat renews the leases of
the jobs it names, merges their ``info`` and progress, relays their streamed text to
the waiters in this process, and answers which of them are no longer held (cancelled,
expired, or re-claimed after the lease ran out): the node stops those. Complete and
fail are fenced writes: a node whose lease is gone changes nothing and hears 409. A
process that stops cleanly says bye last: its node counts as connected no more until it
is heard from again, so sync requests are refused at once.

Files a handler returns are uploaded before the result (:mod:`inferq.core.node_files`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from inferq.core.errors import ClientError, InvalidRequest, NotFound, PayloadTooLarge, StoreError
from inferq.core.events import JobEvents, cancel_and_wait, wait_event
from inferq.core.fairness import Unsettled
from inferq.core.models import Job, JobError, Lease
from inferq.core.node_checks import check_file_name, check_session, parse_result
from inferq.core.node_files import NodeFiles
from inferq.core.node_messages import (
    Beat,
    Held,
    LeaseCompletes,
    LeaseLost,
    NodeLimits,
    Outcome,
    Quick,
    refused,
    sort_outcomes,
)
from inferq.core.node_pull import PullNodes
from inferq.core.node_replicas import Ask, Embedder, Replicas, Replication
from inferq.core.nodes import Node, NodeService, NoNodeConnected
from inferq.core.ports import BlobStore, ClaimOrder, JobQueue
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import Result

log = logging.getLogger("inferq.nodes")

#: how long a waiting claim re-reads the store when no wake-up arrives (another
#: process's submissions on a store without notifications)
POLL_INTERVAL = 0.5
#: jobs one claim may ask for, per model
MAX_CLAIM = 256
#: jobs handed out remembered at most (each one's result then needs no read)
MAX_HANDED = 100_000

#: a model served by nodes runs one kind of request: "chat", "embed" or "payload"
KindOf = Callable[[str], str | None]


class NodeWork:
    """The server's side of the node protocol."""

    def __init__(
        self,
        *,
        store: JobQueue,
        blobs: BlobStore,
        events: JobEvents,
        nodes: NodeService,
        kind_of: KindOf,
        limits: NodeLimits | None = None,
        fair: bool = False,
        replication: Callable[[str], Replication | None] = lambda model: None,
        embed: Embedder | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        #: a store that records a report's plain results in one write
        self._bulk = store if isinstance(store, LeaseCompletes) else None
        self.blobs = blobs
        self.events = events
        self.nodes = nodes
        self.kind_of = kind_of
        self.limits = limits or NodeLimits()
        #: the output files of node jobs
        self.files = NodeFiles(store, blobs, self.limits.max_file_bytes)
        #: claim in the fair order among tenants, as the in-process workers do, and
        #: settle what each tenant's ended jobs cost
        self.fair = fair
        self._unsettled = Unsettled()
        #: the jobs this process handed to nodes and that have not ended here, by id
        self._handed: dict[str, Job] = {}
        self.clock = clock
        #: set (and replaced) whenever work is submitted: wakes every waiting claim
        self._pulse = asyncio.Event()
        self._pulse_task: asyncio.Task[None] | None = None
        #: nodes that pull one job at a time, without listing them (Infera's workers)
        self.pulls = PullNodes(self)
        #: models whose jobs run on several nodes, the answers compared
        self.replicas = Replicas(
            self, plans=replication, embed=embed, owner=f"replicas:{uuid.uuid4().hex[:12]}"
        )

    async def close(self) -> None:
        if self._pulse_task is not None:
            await cancel_and_wait(self._pulse_task)
            self._pulse_task = None

    @staticmethod
    def owner(node: Node, session: str) -> str:
        return f"node:{node.id}:{check_session(session)}"

    def order(self, owner: str, model: str, limit: int) -> ClaimOrder:
        """A node's claim of up to ``limit`` jobs of ``model`` (or of a replica's)."""
        return ClaimOrder(
            owner=owner,
            limit=limit,
            lease_seconds=self.limits.lease_seconds,
            models=[model],
            fair=self.fair,
        )

    # -- hello and claims ----------------------------------------------------------

    async def hello(
        self, node: Node, *, session: str, version: str, models: Mapping[str, int]
    ) -> Node:
        """A node process starts: check what it serves and record it."""
        check_session(session)
        if not models:
            raise InvalidRequest("a node serves at least one model", param="models")
        for name, capacity in models.items():
            self._check_model(name)
            if not 1 <= capacity <= MAX_CLAIM:
                raise InvalidRequest(f"the capacity of {name} is 1 to {MAX_CLAIM}", param="models")
        return await self.nodes.hello(node, version=version, models=models)

    async def bye(self, node: Node, *, session: str) -> list[str]:
        """A node process stops cleanly (its last call): the jobs it still holds that
        this process handed out go back to the queue without using up an attempt (as
        :meth:`release`), and the node counts as connected no more until it is heard
        from again, so a sync request for its models is refused at once instead of
        waiting out the window. Another process of the same node (one beside it, or a
        restart that overlapped) counts it again with its next claim or heartbeat.
        Returns the ids handed back."""
        owner = self.owner(node, session)
        leases = [(job.id, job.attempt) for job in self._handed.values() if job.owner == owner]
        released = await self.release(node, session=session, leases=leases)
        await self.nodes.gone(node)
        return released

    def _check_model(self, name: str) -> str:
        kind = self.kind_of(name)
        if kind is None:
            raise InvalidRequest(
                f"the model {name!r} is not served by nodes here: the server's models file "
                'needs it with engine = "remote"',
                param="models",
            )
        return kind

    async def check_connected(self, model: str) -> None:
        """Refuse a request its client waits for (:class:`NoNodeConnected`) when only
        nodes run ``model`` and no node serving it is connected
        (:attr:`NodeLimits.seen_within`): it would wait out its whole deadline. A model
        whose jobs run on N nodes (``replicas = N``) needs N of them. A model that runs in
        process is never refused, and costs no read."""
        if self.kind_of(model) is None:
            return
        plan = self.replicas.plans(model)
        needed = plan.replicas if plan is not None else 1
        if not await self.nodes.serving(model, within=self.limits.seen_within, count=needed):
            raise NoNodeConnected(model, needed=needed)

    def wanted(self, free: Mapping[str, int]) -> dict[str, int]:
        """The free slots a claim looks for (400 for a model nodes do not serve here, or
        a count out of range): checked before anything else of a request is done."""
        wanted = {}
        for name, count in free.items():
            self._check_model(name)
            if not 0 <= count <= MAX_CLAIM:
                raise InvalidRequest(f"free slots are 0 to {MAX_CLAIM}", param="free")
            if count:
                wanted[name] = count
        return wanted

    async def claim(
        self,
        node: Node,
        *,
        session: str,
        free: Mapping[str, int],
        wait: float,
        running: int,
        still_wanted: Callable[[], Awaitable[bool]] | None = None,
        max_class: ServiceClass = ServiceClass.BATCH,
    ) -> list[Job]:
        """Lease jobs of the node's models, up to ``free`` of each, waiting at most
        ``wait`` seconds for some to arrive.

        ``still_wanted`` is asked before each look after a wait: False ends the claim
        empty (the node went away); it may raise (the node's token was revoked).
        """
        owner = self.owner(node, session)
        wanted = self.wanted(free)
        self._start_pulse()
        deadline = self.clock() + max(0.0, min(wait, self.limits.max_wait))
        await self.nodes.seen(node, in_flight=running)
        while True:
            pulse = self._pulse
            jobs: list[Job] = []
            for name, count in wanted.items():
                if plan := self.replicas.plans(name):
                    ask = Ask(node, owner, name, max_class, plan)
                    jobs += await self.replicas.claim(ask, count)
                    continue
                order = self.order(owner, name, count)
                jobs += await self.store.claim(order, now=self.clock(), max_class=max_class)
            remaining = deadline - self.clock()
            if jobs or not wanted or remaining <= 0:
                if len(self._handed) > MAX_HANDED:
                    self._handed.clear()  # jobs of nodes that vanished: read them again
                self._handed.update((job.id, job) for job in jobs)
                return jobs
            await wait_event(pulse, min(remaining, POLL_INTERVAL))
            if still_wanted is not None and not await still_wanted():
                return []

    def _start_pulse(self) -> None:
        if self._pulse_task is None:
            self._pulse_task = asyncio.create_task(self._pulse_loop(self.events.waker()))

    async def _pulse_loop(self, waker: asyncio.Event) -> None:
        while True:
            await waker.wait()
            waker.clear()
            pulse, self._pulse = self._pulse, asyncio.Event()
            pulse.set()

    # -- running jobs ---------------------------------------------------------------

    async def heartbeat(
        self, node: Node, *, session: str, beats: Sequence[Beat]
    ) -> tuple[list[str], list[str]]:
        """Renew the leases of ``beats``; return the ids still held and those that are
        not (the node stops them)."""
        owner = self.owner(node, session)
        leases = {b.job_id: Lease(b.job_id, owner, b.attempt) for b in beats}
        held = await self.store.renew_leases(
            list(leases.values()), until=self.clock() + self.limits.lease_seconds
        )
        for beat in beats:
            if beat.job_id not in held:
                continue
            info = dict(beat.info)
            if beat.progress is not None:
                info["progress"] = beat.progress
            if info:
                await self.store.set_progress(leases[beat.job_id], info)
            for piece in beat.text:
                self.events.text(beat.job_id, piece)
        await self.nodes.seen(node, in_flight=len(beats))
        return sorted(held), [b.job_id for b in beats if b.job_id not in held]

    async def _held(self, node: Node, held: Held, *, fresh: bool = False) -> tuple[Job, Lease]:
        """The job, when the node holds it under this lease: NotFound for no such job,
        :class:`LeaseLost` when the lease is not (or no longer) the node's.

        The job as this process handed it out serves, unless ``fresh``: the write that
        follows is fenced in the store anyway (and refused when the lease is gone).
        """
        if not fresh and (found := self._handed_to(node, held)) is not None:
            return found
        job_id, attempt = held.job_id, held.attempt
        lease = Lease(job_id, self.owner(node, held.session), attempt)
        job = await self.store.get_job(job_id, tenant=None)
        if job is None:
            raise NotFound(f"job {job_id} not found", param="id")
        if job.state is not JobState.RUNNING or job.owner != lease.owner or job.attempt != attempt:
            raise LeaseLost(f"job {job_id} is not running under this lease", param="id")
        return job, lease

    def _handed_to(self, node: Node, held: Held) -> tuple[Job, Lease] | None:
        """The job as this process handed it out under this lease, if it did."""
        handed = self._handed.get(held.job_id)
        if handed is None or handed.attempt != held.attempt:
            return None
        lease = Lease(held.job_id, self.owner(node, held.session), held.attempt)
        return (handed, lease) if handed.owner == lease.owner else None

    def _parse(self, job: Job, result: dict[str, Any]) -> Result:
        """The result a node sent for ``job``: 413 above the size limit, 400 when it is
        not the kind of result the job needs."""
        size = len(json.dumps(result, separators=(",", ":")).encode())
        if size > self.limits.max_output_bytes:
            raise PayloadTooLarge(
                f"the result is {size} bytes, more than the limit of "
                f"{self.limits.max_output_bytes}",
                param="result",
            )
        return parse_result(job, result)

    async def complete(
        self,
        node: Node,
        held: Held,
        *,
        result: dict[str, Any],
        text: Sequence[str] = (),
        info: Mapping[str, Any] | None = None,
    ) -> None:
        """Record the job's result (fenced), after relaying its last streamed ``text``
        and merging its last ``info``."""
        job, lease = await self._held(node, held)
        job_id = held.job_id
        parsed = self._parse(job, result)
        if info:
            await self.store.set_progress(lease, dict(info))
        for piece in text:
            self.events.text(job_id, piece)
        self._handed.pop(job_id, None)
        if not await self.store.complete(lease, parsed, now=self.clock()):
            raise LeaseLost(f"job {job_id} is not running under this lease", param="id")
        self.events.job_ended(job_id)
        self._note(job.tenant, parsed.usage.prompt_tokens + parsed.usage.completion_tokens)
        await self.replicas.ended(job)

    async def fail(
        self,
        node: Node,
        held: Held,
        *,
        error: JobError,
        retry: bool,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a failed attempt (fenced): the job runs again while attempts remain and
        ``retry`` is true, else it fails."""
        job, lease = await self._held(node, held)
        if info:
            await self.store.set_progress(lease, dict(info))
        self._handed.pop(held.job_id, None)
        if not await self.store.fail(lease, error, now=self.clock(), retry=retry):
            raise LeaseLost(f"job {held.job_id} is not running under this lease", param="id")
        self._note(job.tenant, None)
        if not retry or job.attempt >= job.max_attempts:
            await self.replicas.ended(job)
        self.events.job_submitted()
        self.events.job_ended(held.job_id)

    async def report(self, node: Node, outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
        """Record several outcomes at once (the store groups their writes); for each, the
        job's id and ``ok``, or the error that refused it (its code and message)."""

        async def one(outcome: Outcome) -> dict[str, Any]:
            held = outcome.held
            try:
                if outcome.error is not None:
                    await self.fail(
                        node, held, error=outcome.error, retry=outcome.retry, info=outcome.info
                    )
                elif outcome.result is not None:
                    await self.complete(
                        node, held, result=outcome.result, text=outcome.text, info=outcome.info
                    )
                else:
                    raise InvalidRequest("an outcome has a result or an error", param="results")
            except ClientError as exc:
                return refused(held.job_id, exc)
            return {"id": held.job_id, "ok": True}

        handed_to = partial(self._handed_to, node) if self._bulk is not None else None
        quick, rest, fates = sort_outcomes(outcomes, handed_to, self._parse)

        async def rest_one(i: int) -> None:
            fates[i] = await one(outcomes[i])

        async def quick_all() -> None:
            ended = await self._complete_quick(quick)
            for (i, *_), fate in zip(quick, ended, strict=True):
                fates[i] = fate

        await asyncio.gather(quick_all(), *(rest_one(i) for i in rest))
        await self.settle()
        answered = [fate for fate in fates if fate is not None]
        assert len(answered) == len(outcomes)
        return answered

    async def _complete_quick(self, quick: Sequence[Quick]) -> list[dict[str, Any]]:
        """Record plain results in one write (as :meth:`complete` does each); each fate."""
        if not quick:
            return []
        assert self._bulk is not None
        for _, job, _, _, text in quick:
            for piece in text:
                self.events.text(job.id, piece)
            self._handed.pop(job.id, None)
        done = [(lease, result) for _, _, lease, result, _ in quick]
        now = self.clock()
        try:
            held = await self._bulk.complete_leases(done, now=now)
        except StoreError:
            # one failing write takes the others with it: each one alone, as complete does
            held = list(await asyncio.gather(*(self.store.complete(*one, now=now) for one in done)))
        fates = []
        for (_, job, _, result, _), ok in zip(quick, held, strict=True):
            if not ok:
                lost = LeaseLost(f"job {job.id} is not running under this lease", param="id")
                fates.append(refused(job.id, lost))
                continue
            self.events.job_ended(job.id)
            self._note(job.tenant, result.usage.prompt_tokens + result.usage.completion_tokens)
            await self.replicas.ended(job)
            fates.append({"id": job.id, "ok": True})
        return fates

    async def exchange(
        self,
        node: Node,
        outcomes: Sequence[Outcome],
        *,
        session: str,
        free: Mapping[str, int],
        running: int,
    ) -> tuple[list[dict[str, Any]], list[Job]]:
        """Record ``outcomes`` (as :meth:`report`) and claim jobs for the ``free`` slots
        without waiting (as :meth:`claim`): each outcome's fate, and the jobs claimed.

        The claim and the results go to the store together, so a store that commits
        concurrent writes in groups (SQLite's writer) commits them in one transaction:
        a busy node's round trip costs one commit, not two. The claim cannot take the
        jobs being reported: they run under the node's live leases until their writes.
        """
        wanted = self.wanted(free)  # refused before any result is stored
        if not wanted:
            return await self.report(node, outcomes), []
        fates, jobs = await asyncio.gather(
            self.report(node, outcomes),
            self.claim(node, session=session, free=wanted, wait=0, running=running),
            return_exceptions=True,
        )
        for failed in (fates, jobs):
            if isinstance(failed, BaseException):
                raise failed
        assert isinstance(fates, list) and isinstance(jobs, list)
        return fates, jobs

    def _note(self, tenant: str, tokens: int | None) -> None:
        """What an ended attempt cost its tenant (None: it did not succeed, its estimate
        is refunded), for the next :meth:`settle`."""
        if self.fair:
            self._unsettled.note(tenant, tokens)

    async def settle(self) -> None:
        """Correct the tenants' charges by what their ended jobs cost (as in-process
        workers do at each tick); kept for the next call when the store fails."""
        try:
            await self._unsettled.settle(self.store)
        except StoreError:
            log.warning("settling tenants' shares failed; kept for later")

    async def release(
        self, node: Node, *, session: str, leases: Sequence[tuple[str, int]]
    ) -> list[str]:
        """Hand jobs back to the queue without using up an attempt (a node stopping);
        return the ids handed back."""
        owner = self.owner(node, session)
        released = [
            job_id
            for job_id, attempt in leases
            if await self.store.requeue(Lease(job_id, owner, attempt))
        ]
        for job_id in released:
            self._handed.pop(job_id, None)
            job = await self.store.get_job(job_id, tenant=None)
            if job is not None:
                self._note(job.tenant, None)
        await self.settle()
        if released:
            self.events.job_submitted()
        return released

    async def put_file(
        self, node: Node, held: Held, *, name: str, chunks: AsyncIterable[bytes]
    ) -> None:
        """Store an output file of a job the node holds (413 above the limit)."""
        check_file_name(name)
        job, _ = await self._held(node, held, fresh=True)
        await self.files.put(job, name, chunks)
