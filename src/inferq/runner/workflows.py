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
import time
from collections.abc import Callable

from inferq.core.events import wait_event
from inferq.core.models import Batch
from inferq.core.states import JobState
from inferq.core.workflow_run import JobLost, WorkflowExecutor
from inferq.core.workflows import DIALECT
from inferq.runner.retry import Retries, RetryPolicy
from inferq.store.base import JobStore

log = logging.getLogger("inferq.workflows")

#: the longest pause between two turns while turns fail (the store is away)
LOOP_PAUSE_CAP = 30.0
#: open records read per store round trip
PAGE = 200


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
        retry: RetryPolicy | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.owner = owner
        self.max_running = max_running
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.clock = clock
        self.retries = Retries(retry)
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
        failures = 0
        while True:
            try:
                await self.turn()
            except Exception:
                # the store is down or unreachable: say so once, then wait longer each time
                failures += 1
                if failures == 1:
                    log.exception("workflow runner turn failed; retrying")
                else:
                    log.debug("workflow runner turn failed again (%d in a row)", failures)
            else:
                if failures:
                    log.info("workflow runner turns work again after %d failures", failures)
                failures = 0
            pause = (
                min(LOOP_PAUSE_CAP, self.retries.policy.delay(failures))
                if failures
                else self.interval
            )
            await wait_event(self._wake, pause)
            self._wake.clear()

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
            if not await self._lease(job):
                continue
            self._running[job.id] = asyncio.create_task(self._hold(job))
        return len(self._running)

    async def _open_jobs(self, now: float) -> list[Batch]:
        """Every open workflow job whose lease is free, oldest first, page by page."""
        jobs: list[Batch] = []
        while True:
            page = await self.store.active_batches(
                now=now, limit=PAGE, workflows=True, after=jobs[-1].seq if jobs else 0
            )
            jobs += page
            if len(page) < PAGE:
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
                await self._failed(job, state, failed)
            else:
                if self.retries.succeeded(job.id):
                    log.info("workflow job %s: runs again after failures", job.id)
                with contextlib.suppress(Exception):
                    now = self.clock()
                    await self.store.lease_batch(job, owner=self.owner, now=now, until=now - 1)
            self.wake()

    async def _failed(self, job: Batch, state: JobState, exc: Exception) -> None:
        """A run of ``job`` raised: back off, or end the job after too many in a row."""
        now = self.clock()
        failure = self.retries.failed(job.id, state.value, now)
        if failure.give_up:
            reason = (
                f"the job could not be run: {failure.count} unexpected errors in a row, "
                f"the last {type(exc).__name__}; see the server log"
            )
            if failure.count == self.retries.policy.give_up_after:
                log.error("workflow job %s: %s", job.id, reason, exc_info=exc)
            try:
                await self._end(job, reason)
            except Exception:
                if failure.count == self.retries.policy.give_up_after:
                    log.warning("workflow job %s: could not be failed; trying again later",
                                job.id, exc_info=True)  # fmt: skip
            else:
                self.retries.forget(job.id)
                with contextlib.suppress(Exception):
                    await self.store.lease_batch(job, owner=self.owner, now=now, until=now - 1)
                return
        elif failure.first_in_state:
            log.warning(
                "workflow job %s (%s): the run failed; retrying in %.0f s (at most %d tries)",
                job.id, state.value, failure.retry_at - now,
                self.retries.policy.give_up_after, exc_info=exc,
            )  # fmt: skip
        else:
            log.debug("workflow job %s (%s): the run failed again (%d in a row): %s",
                      job.id, state.value, failure.count, type(exc).__name__)  # fmt: skip
        # the lease, held until the retry, keeps every runner of the fleet off it till then
        with contextlib.suppress(Exception):
            await self.store.lease_batch(job, owner=self.owner, now=now, until=failure.retry_at)

    async def _end(self, job: Batch, reason: str) -> None:
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
