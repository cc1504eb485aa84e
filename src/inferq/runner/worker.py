"""The worker: claims jobs, keeps engine slots busy, heartbeats, writes results.

One claim loop per engine keeps up to ``engine.slots`` jobs running, claimed in
scheduling order. When every slot is busy and more urgent work is waiting (a sync
request while batch rows or queued jobs run, a queued job while batch rows run),
the least urgent running job is preempted: its generation is aborted (within one
token or decode step), it goes back to the queue without using up an attempt,
and the urgent job takes the slot at once.

A separate monitor task (never the one generating) renews the leases of every
running job, publishes progress, and aborts generations whose job was cancelled,
expired, or whose lease was lost. Every write the worker makes is fenced by its
lease, so a job re-claimed by another worker cannot be overwritten by this one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from inferq.core import log_context
from inferq.core.errors import EngineError, StoreError
from inferq.core.events import JobEvents, cancel_and_wait, wait_event
from inferq.core.fairness import Unsettled
from inferq.core.models import Job, JobError, Lease
from inferq.core.ports import ClaimOrder, JobQueue
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatRequest, ChatResult, EmbedRequest, PayloadRequest, Result, Usage
from inferq.engines.base import ABORTED, AbortSignal, Engine, urgency
from inferq.engines.registry import ModelRegistry
from inferq.runner.claims import EngineClaims, Offer
from inferq.runner.metrics import Metrics, class_label

log = logging.getLogger("inferq.worker")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    lease_seconds: float = 30.0
    #: how long an idle claim loop sleeps when no wake-up arrives
    poll_interval: float = 0.5
    #: how often running jobs are checked for cancellation and their progress saved
    tick: float = 0.5
    #: how often jobs past their deadline are expired
    expire_every: float = 2.0
    #: claim in fair order among tenants (:mod:`inferq.core.fairness`), settling what
    #: each tenant's ended jobs cost at every tick
    fair: bool = False
    #: the longest a submit's offer (:meth:`Worker.offer`) waits for a claim under way
    offer_wait: float = 0.05

    @property
    def heartbeat_every(self) -> float:
        return min(self.lease_seconds / 3, 1.0)


@dataclass
class _Running:
    job: Job
    lease: Lease
    abort: AbortSignal
    tokens: int = 0
    reported: int = 0
    #: when it started on this worker, and when its first token came (clock time)
    started_at: float = 0.0
    first_token_at: float | None = None
    #: stopped to make room for more urgent work: handed back to the queue when it ends
    preempted: bool = False
    #: the tokens it processed, once its result is recorded (None: it did not succeed)
    processed: int | None = None
    #: the job as its success was committed (for this process's waiters)
    succeeded: Job | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


def succeeded(job: Job, result: Result, now: float) -> Job:
    """``job`` (as claimed) as the store's ``complete`` leaves it: what a waiter in this
    process would read back."""
    return job.evolve(
        state=JobState.SUCCEEDED,
        result=result,
        info={**job.info, "progress": 1},
        usage=Usage(
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            cached_tokens=result.usage.cached_tokens,
        ),
        owner=None,
        lease_expires_at=None,
        finished_at=now,
    )


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        *,
        store: JobQueue,
        registry: ModelRegistry,
        events: JobEvents,
        settings: WorkerSettings | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics(models=registry.names())
        self.registry = registry
        self.events = events
        self.settings = settings or WorkerSettings()
        self.clock = clock
        self.owner = new_owner_id()
        self.running: dict[str, _Running] = {}
        self._loops: list[asyncio.Task[None]] = []
        #: each engine's claims (:mod:`inferq.runner.claims`), by model name
        self._claims: dict[str, EngineClaims] = {}
        self._stopped = False
        #: what ended jobs cost their tenants, not yet settled in the store
        self._unsettled = Unsettled()

    async def start(self) -> None:
        self.events.on_cancel(self._abort_job)
        for engine in self.registry:
            if not engine.runs_here:
                continue
            # The waker is set when work is submitted *and* when a slot of this engine
            # frees: a loop idle because only its reserved slot was free looks again.
            claims = EngineClaims(
                engine=engine, waker=self.events.waker(), submitted=self.events.waker()
            )
            self._claims[claims.name] = claims
            self.metrics.slots(claims.name, busy=0, total=engine.slots)
            self._loops.append(asyncio.create_task(self._claim_loop(claims)))
        self._loops.append(asyncio.create_task(self._monitor_loop()))
        log.info("worker %s started", self.owner)

    async def stop(self) -> None:
        """Stop claiming, abort what runs, and hand those jobs back at once."""
        await cancel_and_wait(*self._loops)
        self._loops.clear()
        self._stopped = True  # no more offers
        running = list(self.running.values())
        for run in running:
            run.abort.set("worker stopping")
        tasks = [run.task for run in running if run.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # An expired lease is re-claimed by the next worker without waiting.
        await self.store.renew_leases([run.lease for run in running], until=self.clock() - 1)
        log.info("worker %s stopped", self.owner)

    # -- claiming ---------------------------------------------------------------

    async def _claim_loop(self, claims: EngineClaims) -> None:
        engine, waker, name = claims.engine, claims.waker, claims.name
        while True:
            mine = self._mine(name)
            free = engine.slots - len(mine)
            waker.clear()
            claims.news()
            if claims.claiming:  # a submit claims for this engine (see offer)
                claims.deferred = True
                await waker.wait()
                continue
            if free > 0 and claims.dry:
                await self._idle(claims)  # a freed slot alone: nothing to look for
                continue
            claims.begin()
            jobs: list[Job] | None
            try:
                if free <= 0:
                    jobs = None if await self._preempt(engine, mine) else []
                else:
                    jobs = await self.store.claim(self._order(name, free), now=self.clock())
            except Exception:
                log.exception("claim failed; retrying")
                await asyncio.sleep(self.settings.poll_interval)
                continue
            finally:
                claims.over()
            if jobs is None:  # a preemption started a more urgent job: look again
                continue
            for job in jobs:
                self._start(engine, job)
            if not jobs:
                # every slot busy: until one frees (or work comes)
                await (waker.wait() if free <= 0 else self._idle(claims))

    async def _idle(self, claims: EngineClaims) -> None:
        """Nothing to claim when last looked: wait for work or a freed slot, until a poll's
        interval has passed since that look, when the loop looks again whatever it heard."""
        now = time.monotonic()
        if not claims.dry:
            claims.dry, claims.looked_at = True, now
        remaining = claims.looked_at + self.settings.poll_interval - now
        if remaining <= 0 or not await wait_event(claims.waker, remaining):
            claims.dry = False

    def _mine(self, model: str) -> list[_Running]:
        """The jobs running on ``model``'s engine, those already stopped for others aside."""
        return [r for r in self.running.values() if r.job.model == model and not r.preempted]

    async def offer(self, model: str) -> Offer | None:
        """The claim this worker would make next for ``model``, to be made in the
        transaction that stores a new job (:meth:`inferq.core.service.JobService.submit`):
        the new job starts without waiting for the claim loop and its commit. A claim of
        the engine under way (such as the loop's look for more work when a job ended)
        is waited for, briefly. None when the model does not run here, no slot of it is
        free, or that claim takes longer. Until the offer ends, the claim loop of that
        engine does not claim."""
        claims = self._claims.get(model)
        if claims is None or self._stopped:
            return None
        if not await claims.turn(self.settings.offer_wait) or self._stopped:
            return None
        free = claims.engine.slots - len(self._mine(model))
        if free <= 0:
            return None
        claims.begin()
        start = functools.partial(self._start_claimed, claims.engine)
        return Offer(claims=claims, order=self._order(model, free), start=start)

    def _order(self, model: str, limit: int) -> ClaimOrder:
        return ClaimOrder(
            owner=self.owner,
            limit=limit,
            lease_seconds=self.settings.lease_seconds,
            models=[model],
            fair=self.settings.fair,
        )

    def _start_claimed(self, engine: Engine, claimed: Sequence[Job]) -> None:
        if claimed and self._stopped:
            # the worker stopped meanwhile: their leases run out and another worker runs them
            log.info("worker stopped: %d jobs it had just claimed wait for leases", len(claimed))
            return
        for job in claimed:
            self._start(engine, job)

    async def _preempt(self, engine: Engine, mine: list[_Running]) -> bool:
        """With every slot busy, make room for more urgent work if there is any.

        The least urgent running job (batch rows before queued jobs; then lower
        priority, then later submission) is stopped and handed back to the queue
        without using up an attempt, and a job of a more urgent class takes its
        slot at once. Only a more urgent *class* preempts: within a class, work
        waits for a slot as usual.
        """
        victims = [r for r in mine if r.job.service_class > ServiceClass.INTERACTIVE]
        if not victims:
            return False
        victim = max(victims, key=lambda r: (r.job.service_class, -r.job.priority, r.job.seq))
        jobs = await self.store.claim(
            self._order(engine.spec.name, 1),
            now=self.clock(),
            max_class=ServiceClass(victim.job.service_class - 1),
        )
        if not jobs:
            return False
        victim.preempted = True
        self.metrics.preemptions.labels(engine.spec.name).inc()
        victim.abort.set(f"preempted by job {jobs[0].id}")
        log.info("job %s preempted by %s", victim.job.id, jobs[0].id)
        self._start(engine, jobs[0])
        return True

    def _start(self, engine: Engine, job: Job) -> None:
        now = self.clock()
        run = _Running(
            job=job,
            lease=Lease(job.id, self.owner, job.attempt),
            abort=AbortSignal(),
            started_at=now,
        )
        self.running[job.id] = run
        self.metrics.queue_seconds.labels(job.model, class_label(job.service_class)).observe(
            max(now - job.created_at, 0.0)
        )
        self._count_slots(engine)
        log.info("job %s running (attempt %d, worker %s)", job.id, job.attempt, self.owner)
        run.task = asyncio.create_task(self._run(engine, run))

    async def _run(self, engine: Engine, run: _Running) -> None:
        job = run.job
        # this task's own context: its log lines name the job, tenant and model
        log_context.job_id.set(job.id)
        log_context.tenant.set(job.tenant)
        log_context.model.set(job.model)

        def on_text(piece: str) -> None:
            if run.first_token_at is None:
                run.first_token_at = self.clock()
                self.metrics.first_token_seconds.labels(
                    job.model, class_label(job.service_class)
                ).observe(max(run.first_token_at - run.started_at, 0.0))
            run.tokens += 1
            self.events.text(job.id, piece)

        try:
            try:
                result: Result
                # one number, higher is more urgent: engines that schedule use it
                priority = urgency(job.service_class, job.priority)
                if isinstance(job.request, EmbedRequest):
                    result = await engine.embed(job.request, abort=run.abort, priority=priority)
                elif isinstance(job.request, PayloadRequest):
                    raise EngineError(f"model {job.model} runs a handler on nodes, not here")
                else:
                    result = await engine.generate(
                        job.request, abort=run.abort, on_text=on_text, priority=priority
                    )
            except EngineError as exc:
                await self._fail(run, JobError(exc.code, exc.message), retry=exc.retryable)
            except Exception as exc:
                log.exception("job %s: engine raised an unexpected error", job.id)
                await self._fail(
                    run, JobError("engine_error", f"{type(exc).__name__}: {exc}"), retry=True
                )
            else:
                await self._finish(run, result)
        except StoreError as exc:
            # The outcome could not be saved; the lease runs out and the job runs again.
            log.warning("job %s: could not record its outcome (%s); it will be re-run", job.id, exc)
        finally:
            self._ended(run)
            self.running.pop(job.id, None)
            self._count_slots(engine)
            self._claims[job.model].waker.set()
            self.events.job_ended(job.id, run.succeeded)

    async def _hand_back(self, run: _Running) -> None:
        """A preempted job goes back to the queue, its partial output dropped."""
        if await self.store.requeue(run.lease):
            log.info("job %s handed back to the queue", run.job.id)
            self.events.job_submitted()

    async def _finish(self, run: _Running, result: Result) -> None:
        if run.preempted:
            await self._hand_back(run)
            return
        if run.abort.is_set() or (
            isinstance(result, ChatResult) and result.finish_reason == ABORTED
        ):
            log.info("job %s stopped: %s", run.job.id, run.abort.reason)
            self._count_stopped(run)
            return
        now = self.clock()
        if await self.store.complete(run.lease, result, now=now):
            run.succeeded = succeeded(run.job, result, now)
            self._count_end(run, "succeeded")
            model = run.job.model
            usage = result.usage
            run.processed = usage.prompt_tokens + usage.completion_tokens
            self.metrics.tokens.labels(model, "prompt").inc(usage.prompt_tokens)
            self.metrics.tokens.labels(model, "completion").inc(usage.completion_tokens)
            self.metrics.tokens.labels(model, "cached").inc(usage.cached_tokens)
            log.info(
                "job %s succeeded (%d prompt + %d completion tokens)",
                run.job.id,
                result.usage.prompt_tokens,
                result.usage.completion_tokens,
            )
        else:
            log.info("job %s finished after its lease was lost; result discarded", run.job.id)

    async def _fail(self, run: _Running, error: JobError, *, retry: bool) -> None:
        if run.preempted:
            await self._hand_back(run)
            return
        if run.abort.is_set():
            self._count_stopped(run)
            return
        if await self.store.fail(run.lease, error, now=self.clock(), retry=retry):
            log.info("job %s attempt %d failed: %s", run.job.id, run.lease.attempt, error.message)
            # the store requeues on the same condition
            if retry and run.job.attempt < run.job.max_attempts:
                self.metrics.retries.labels(run.job.model).inc()
                self.events.job_submitted()  # queued again: claimable at once
            else:
                self._count_end(run, "failed")

    def _count_end(self, run: _Running, outcome: str) -> None:
        """A job this worker ran reached ``outcome`` (succeeded or failed)."""
        job = run.job
        self.metrics.job_ended(job.model, job.service_class, outcome)
        self.metrics.run_seconds.labels(job.model, class_label(job.service_class)).observe(
            max(self.clock() - run.started_at, 0.0)
        )

    def _count_stopped(self, run: _Running) -> None:
        """A running job was stopped because it was cancelled or passed its deadline."""
        if run.abort.reason in ("cancelled", "expired"):
            self.metrics.job_ended(run.job.model, run.job.service_class, run.abort.reason)

    def _count_slots(self, engine: Engine) -> None:
        name = engine.spec.name
        busy = sum(1 for r in self.running.values() if r.job.model == name)
        self.metrics.slots(name, busy=busy, total=engine.slots)

    def _abort_job(self, job_id: str, reason: str = "cancelled") -> None:
        run = self.running.get(job_id)
        if run is not None:
            run.abort.set(reason)

    def _ended(self, run: _Running) -> None:
        """Note what the job cost its tenant, for the next settlement."""
        if self.settings.fair:
            self._unsettled.note(run.job.tenant, run.processed)

    # -- monitoring -------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        last_beat = last_expire = 0.0
        while True:
            await asyncio.sleep(self.settings.tick)
            try:
                now = self.clock()
                if now - last_beat >= self.settings.heartbeat_every:
                    last_beat = now
                    await self._heartbeat(now)
                await self._report_progress()
                if self._unsettled:  # kept for the next tick when the store fails
                    await self._unsettled.settle(self.store)
                if now - last_expire >= self.settings.expire_every:
                    last_expire = now
                    for job_id in await self.store.expire_overdue(now=now):
                        self._abort_job(job_id, "expired")
            except Exception:
                log.exception("worker monitor failed; retrying")

    async def _heartbeat(self, now: float) -> None:
        runs = list(self.running.values())
        held = await self.store.renew_leases(
            [r.lease for r in runs], until=now + self.settings.lease_seconds
        )
        for run in runs:
            if run.job.id not in held and not run.abort.is_set():
                run.abort.set("lease lost: the job was cancelled, expired or re-claimed")

    async def _report_progress(self) -> None:
        for run in list(self.running.values()):
            request = run.job.request
            if (
                run.tokens == run.reported
                or run.abort.is_set()
                or not isinstance(request, ChatRequest)
            ):
                continue
            run.reported = run.tokens
            limit = request.max_tokens or self.registry.get(run.job.model).spec.context_length
            progress = round(min(run.tokens / max(limit, 1), 0.99), 3)
            await self.store.set_progress(run.lease, {"progress": progress})
