"""The workflow runner: takes scheduled document jobs and runs them under a lease.

Each turn it lists the open workflow jobs whose lease is free or has run out: a
scheduled one starts when its tenant has fewer than ``max_running`` jobs in
progress; a running one (its runner died) is taken over; a cancelling one is
ended as STOPPED. While a job runs, a watch loop renews its lease and reads its
record: a cancel stops the node that runs (and its jobs on the engines), and a
lost lease stops the run without another write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from inferq.core.events import wait_event
from inferq.core.models import Batch
from inferq.core.states import JobState
from inferq.core.workflow_run import JobLost, WorkflowExecutor
from inferq.core.workflows import DIALECT
from inferq.store.base import JobStore

log = logging.getLogger("inferq.workflows")


class WorkflowRunner:
    def __init__(
        self,
        *,
        store: JobStore,
        executor: WorkflowExecutor,
        owner: str,
        max_running: int = 5,
        concurrency: int = 4,
        lease_seconds: float = 30.0,
        interval: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.executor = executor
        self.owner = owner
        self.max_running = max_running
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._running.clear()

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.turn()
            except Exception:
                log.exception("workflow runner turn failed; retrying")
            await wait_event(self._wake, self.interval)
            self._wake.clear()

    async def turn(self) -> int:
        """Take what can be taken now; return how many jobs this runner holds."""
        for job_id, task in list(self._running.items()):
            if task.done():
                del self._running[job_id]
        if len(self._running) >= self.concurrency:
            return len(self._running)
        candidates = [
            b
            for b in await self.store.active_batches(now=self.clock(), limit=200, workflows=True)
            if b.id not in self._running
        ]
        running: dict[str, int] = {}
        for job in candidates:
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
            if not await self._lease(job):
                continue
            self._running[job.id] = asyncio.create_task(self._hold(job))
        return len(self._running)

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
            tenant=tenant,
            dialect=DIALECT,
            limit=self.max_running + 1,
            states=frozenset({JobState.RUNNING, JobState.CANCELLING}),
        )
        return len(jobs)

    async def _lease(self, job: Batch) -> bool:
        now = self.clock()
        return await self.store.lease_batch(
            job, owner=self.owner, now=now, until=now + self.lease_seconds
        )

    async def _hold(self, job: Batch) -> None:
        """Run one job to its end while the lease holds; release the lease after."""
        try:
            current = await self.store.get_batch(job.id, tenant=job.tenant)
            if current is None or current.state.terminal:
                return
            if current.state is JobState.CANCELLING:
                await self.executor.stop(current)
                return
            if current.state is JobState.QUEUED:
                started = await self.executor.start(current)
                if started is None:
                    return
                current = started
            await self._run_watched(current)
        except Exception:
            log.exception("workflow job %s: the runner failed; another turn takes it", job.id)
        finally:
            with contextlib.suppress(Exception):
                now = self.clock()
                await self.store.lease_batch(job, owner=self.owner, now=now, until=now - 1)
            self.wake()

    async def _run_watched(self, job: Batch) -> None:
        run = asyncio.create_task(self.executor.run(job))
        try:
            while not run.done():
                await asyncio.wait([run], timeout=min(self.interval, self.lease_seconds / 3))
                if run.done():
                    break
                if not await self._lease(job):
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
