"""The workflow runner: takes scheduled document jobs and runs them under a lease.

Each turn it pages through the open workflow jobs whose lease is free or has run
out (other batches are the batch runner's): a scheduled one starts when its tenant
has fewer than ``max_running`` jobs in progress, tenants taking turns (each
tenant's oldest scheduled job before any tenant's second), so one tenant's backlog
never keeps another's jobs waiting; a running one (its runner died) is taken over;
a cancelling one is ended as STOPPED. While a job runs, a watch loop renews its
lease and reads its record: a cancel stops the node that runs (and its jobs on the
engines), and a lost lease stops the run without another write.

A job whose run raises does not hold a slot in a loop: the failure is logged (in
full once per job and state), the job waits out a doubling delay under its lease,
and after :attr:`RetryPolicy.give_up_after` failures in a row it ends FAILED with a
message saying so. A job that can never run (a node id that cannot name a blob)
fails at once, naming the node (:func:`inferq.core.workflow_run.unrunnable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Unpack

from inferq.core.models import Batch
from inferq.core.ports import BatchFilter, BatchStore
from inferq.core.service import JobService
from inferq.core.states import JobState
from inferq.core.workflow_meta import DIALECT
from inferq.core.workflow_run import JobLost, WorkflowExecutor
from inferq.core.workflows import WorkflowService
from inferq.runner.periodic import RecordRunner, RunnerOptions

log = logging.getLogger("inferq.workflows")


def executor_of(service: WorkflowService, jobs: JobService) -> WorkflowExecutor:
    """What runs the jobs ``service`` creates: on its store, blobs, documents, catalogue
    and clock, their work on the engines submitted through ``jobs``."""
    return WorkflowExecutor(
        store=service.store,
        blobs=service.blobs,
        jobs=jobs,
        documents=service.documents,
        catalogue=service.catalogue,
        clock=service.clock,
    )


class WorkflowRunner(RecordRunner):
    noun = "workflow job"
    workflows = True
    page = 200

    def __init__(
        self,
        *,
        store: BatchStore,
        executor: WorkflowExecutor,
        owner: str,
        max_running: int = 5,
        concurrency: int = 4,
        **options: Unpack[RunnerOptions],
    ) -> None:
        super().__init__(store=store, owner=owner, log=log, **options)
        self.executor = executor
        self.max_running = max_running
        self.concurrency = concurrency
        self._running: dict[str, asyncio.Task[None]] = {}

    async def stop(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await super().stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._running.clear()

    async def turn(self) -> int:
        """Take what can be taken now; return how many jobs this runner holds."""
        for job_id, task in list(self._running.items()):
            if task.done():
                del self._running[job_id]
        if len(self._running) >= self.concurrency:
            return len(self._running)
        now = self.clock()
        self.retries.prune(now)
        candidates = [
            job
            for job in await self._open_jobs(now)
            if job.id not in self._running and self.retries.due(job.id, now)
        ]
        running: dict[str, int] = {}
        for job in _tenants_take_turns(candidates):
            if len(self._running) >= self.concurrency:
                break
            if job.state is JobState.QUEUED:
                count = running.get(job.tenant)
                if count is None:
                    count = await self._running_count(job.tenant)
                if count >= self.max_running:
                    running[job.tenant] = count
                    continue
                running[job.tenant] = count + 1
            if not await self.lease(job):
                continue
            self._running[job.id] = asyncio.create_task(self._hold(job))
        return len(self._running)

    async def _open_jobs(self, now: float) -> list[Batch]:
        """Every open workflow job whose lease is free, oldest first, page by page."""
        jobs: list[Batch] = []
        while True:
            page = await self.open_records(now, after=jobs[-1].seq if jobs else 0)
            jobs += page
            if len(page) < self.page:
                return jobs

    async def run_until_idle(self) -> None:
        """Run turns until no job is open (tests and the CLI)."""
        while True:
            await self.turn()
            if self._running:
                await asyncio.wait(list(self._running.values()))
                continue
            if not await self.store.active_batches(now=self.clock() + 1e9, limit=1, workflows=True):
                return
            await asyncio.sleep(self.interval)

    async def _running_count(self, tenant: str) -> int:
        jobs = await self.store.list_batches(
            BatchFilter(
                tenant=tenant,
                dialect=DIALECT,
                limit=self.max_running + 1,
                states=frozenset({JobState.RUNNING, JobState.CANCELLING}),
            )
        )
        return len(jobs)

    async def _hold(self, job: Batch) -> None:
        """Run one job to its end while the lease holds; release the lease after."""
        state = job.state
        failed: Exception | None = None
        try:
            current = await self.store.get_batch(job.id, tenant=job.tenant)
            if current is None or current.state.terminal:
                return
            state = current.state
            if current.state is JobState.CANCELLING:
                await self.executor.stop(current)
                return
            if current.state is JobState.QUEUED:
                started = await self.executor.start(current)
                if started is None:
                    return
                current, state = started, started.state
            await self._run_watched(current)
        except Exception as exc:
            failed = exc
        finally:
            if failed is not None:
                await self.record_failed(job, state.value, failed)
            else:
                self.recovered(job)
                await self.release(job)
            self.wake()

    async def give_up(self, job: Batch, reason: str) -> None:
        """End a job whose runs keep failing: FAILED, or STOPPED when it was cancelled."""
        for _ in range(5):
            current = await self.store.get_batch(job.id, tenant=job.tenant)
            if current is None or current.state.terminal:
                return
            if current.state is JobState.CANCELLING:
                if await self.executor.stop(current) is not None:
                    return
            elif await self.executor.fail(current, reason, expect=current.state) is not None:
                return

    async def _run_watched(self, job: Batch) -> None:
        run = asyncio.create_task(self.executor.run(job))
        try:
            while not run.done():
                await asyncio.wait([run], timeout=min(self.interval, self.lease_seconds / 3))
                if run.done():
                    break
                if not await self.lease(job):
                    log.warning("workflow job %s: lease lost; stopping", job.id)
                    run.cancel()
                    break
                current = await self.store.get_batch(job.id, tenant=job.tenant)
                if current is None or current.state is not JobState.RUNNING:
                    run.cancel()
                    break
            await asyncio.wait([run])
        except asyncio.CancelledError:  # the runner itself stops
            run.cancel()
            await asyncio.wait([run])
            raise
        if not run.cancelled():
            error = run.exception()
            if error is None:
                return
            if not isinstance(error, JobLost):
                raise error
        current = await self.store.get_batch(job.id, tenant=job.tenant)
        if current is not None and current.state is JobState.CANCELLING:
            await self.executor.stop(current)


def _tenants_take_turns(jobs: list[Batch]) -> list[Batch]:
    """The order to take jobs in: those to take over or stop first, then the scheduled
    ones round-robin by tenant (every tenant's oldest before any tenant's second), so
    that one tenant's backlog never fills every slot while another's jobs wait."""
    first = [j for j in jobs if j.state is not JobState.QUEUED]
    nth: dict[str, int] = {}
    scheduled: list[tuple[int, int, Batch]] = []
    for job in sorted((j for j in jobs if j.state is JobState.QUEUED), key=lambda j: j.seq):
        place = nth.get(job.tenant, 0)
        nth[job.tenant] = place + 1
        scheduled.append((place, job.seq, job))
    scheduled.sort(key=lambda item: (item[0], item[1]))
    return first + [job for _, _, job in scheduled]
