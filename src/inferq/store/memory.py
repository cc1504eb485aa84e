"""In-memory store: the fake used by unit tests and queue benchmarks.

It implements every port of :class:`~inferq.core.ports.Store` and keeps the same
contract as the SQL stores (the contract suites run on it), but nothing survives the
process. Jobs and keys are here; files, batches and batch rows in
:mod:`inferq.store.memory_batches`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from inferq.core.errors import Conflict
from inferq.core.models import ActiveCount, ApiKey, Job, JobError, JobFilter, Lease, QueueMetrics
from inferq.core.ports import ClaimOrder, Ending, Store, insert_then_claim
from inferq.core.scheduling import claim_order, lease_expired_error
from inferq.core.states import JobState, ServiceClass
from inferq.core.throughput import FinishedCount
from inferq.core.work import Result
from inferq.store.memory_limits import MemoryLimits
from inferq.store.memory_retention import MemoryRetention
from inferq.store.memory_tenants import MemoryTenants
from inferq.store.memory_webhooks import MemoryWebhooks, Watched
from inferq.store.nodes import MemoryNodes

#: the states :meth:`MemoryStore.count_active` counts
_ACTIVE = frozenset({JobState.VALIDATING, JobState.QUEUED, JobState.RUNNING})


class MemoryStore(MemoryNodes, MemoryRetention, MemoryWebhooks, MemoryTenants, MemoryLimits, Store):
    """Every port in dictionaries, under one lock."""

    def __init__(self) -> None:
        super().__init__()
        MemoryTenants.__init__(self)
        MemoryLimits.__init__(self)
        MemoryWebhooks.__init__(self)
        # the tables whose terminal changes write the webhook outbox (the SQL triggers)
        self.jobs = Watched(self.job_written)
        self.batches = Watched(self.batch_written)
        self.keys: dict[str, tuple[ApiKey, str]] = {}
        self._open = False

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def ping(self) -> bool:
        return self._open

    # -- jobs -------------------------------------------------------------------

    async def insert_job(self, job: Job) -> Job:
        async with self._lock:
            if job.id in self.jobs:
                raise Conflict(f"a job with id {job.id} already exists", param="id")
            stored = job.evolve(seq=next(self._seq))
            self.jobs[job.id] = stored
            return stored

    async def get_job(self, job_id: str, *, tenant: str | None) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            return None
        return job

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        found = [
            job
            for job in self.jobs.values()
            if (flt.tenant is None or job.tenant == flt.tenant)
            and (flt.model is None or job.model == flt.model)
            and (flt.states is None or job.state in flt.states)
        ]
        found.sort(key=lambda job: job.seq, reverse=True)
        return found[: flt.limit]

    async def claim(
        self, order: ClaimOrder, *, now: float, max_class: ServiceClass = ServiceClass.BATCH
    ) -> list[Job]:
        owner, limit, models = order.owner, order.limit, order.models
        async with self._lock:
            candidates: list[Job] = []
            for job in list(self.jobs.values()):
                if job.service_class > max_class or (
                    models is not None and job.model not in models
                ):
                    continue
                if job.state is JobState.QUEUED:
                    if job.deadline_at is None or job.deadline_at > now:
                        candidates.append(job)
                elif job.state is JobState.RUNNING and _lease_expired(job, now):
                    if job.attempt >= job.max_attempts:
                        self.jobs[job.id] = job.evolve(
                            state=JobState.FAILED,
                            error=lease_expired_error(job.attempt, job.max_attempts),
                            owner=None,
                            lease_expires_at=None,
                            finished_at=now,
                        )
                    else:
                        candidates.append(
                            job.evolve(error=lease_expired_error(job.attempt, job.max_attempts))
                        )
            candidates.sort(key=claim_order)
            if order.fair:  # the expired leases first, then the tenants' jobs in fair order
                rescued = [job for job in candidates if job.state is JobState.RUNNING][:limit]
                queued = [job for job in candidates if job.state is JobState.QUEUED]
                candidates = rescued + self.fair_pick(queued, limit - len(rescued))
            claimed = []
            for job in candidates[:limit]:
                leased = job.evolve(
                    state=JobState.RUNNING,
                    owner=owner,
                    attempt=job.attempt + 1,
                    lease_expires_at=now + order.lease_seconds,
                    claimed_at=now,
                )
                self.jobs[job.id] = leased
                claimed.append(leased)
            return claimed

    async def insert_and_claim(
        self, job: Job, order: ClaimOrder, *, now: float
    ) -> tuple[Job, list[Job]]:
        return await insert_then_claim(self, job, order, now=now)

    def _held(self, lease: Lease) -> Job | None:
        job = self.jobs.get(lease.job_id)
        if (
            job is None
            or job.state is not JobState.RUNNING
            or job.owner != lease.owner
            or job.attempt != lease.attempt
        ):
            return None
        return job

    async def renew_leases(self, leases: Sequence[Lease], *, until: float) -> set[str]:
        async with self._lock:
            held = set()
            for lease in leases:
                job = self._held(lease)
                if job is not None:
                    self.jobs[job.id] = job.evolve(lease_expires_at=until)
                    held.add(job.id)
            return held

    async def _change_held(self, lease: Lease, change: Callable[[Job], Job]) -> bool:
        """Replace the job by ``change(job)`` while ``lease`` holds it (the fence)."""
        async with self._lock:
            job = self._held(lease)
            if job is None:
                return False
            self.jobs[job.id] = change(job)
            return True

    async def set_progress(self, lease: Lease, info: dict[str, Any]) -> bool:
        return await self._change_held(lease, lambda job: job.evolve(info={**job.info, **info}))

    async def complete(self, lease: Lease, result: Result, *, now: float) -> bool:
        def succeed(job: Job) -> Job:
            return job.evolve(
                state=JobState.SUCCEEDED,
                result=result,
                info={**job.info, "progress": 1},
                usage=result.usage,
                owner=None,
                lease_expires_at=None,
                finished_at=now,
            )

        return await self._change_held(lease, succeed)

    async def fail(self, lease: Lease, error: JobError, *, now: float, retry: bool) -> bool:
        def failed(job: Job) -> Job:
            again = retry and job.attempt < job.max_attempts
            return job.evolve(
                state=JobState.QUEUED if again else JobState.FAILED,
                error=error,
                owner=None,
                lease_expires_at=None,
                finished_at=None if again else now,
            )

        return await self._change_held(lease, failed)

    async def requeue(self, lease: Lease) -> bool:
        def requeued(job: Job) -> Job:
            return job.evolve(
                state=JobState.QUEUED,
                attempt=job.attempt - 1,
                owner=None,
                lease_expires_at=None,
                claimed_at=None,
            )

        return await self._change_held(lease, requeued)

    async def finish(
        self, job_id: str, ending: Ending, *, tenant: str | None, now: float
    ) -> tuple[Job, Job] | None:
        async with self._lock:
            before = await self.get_job(job_id, tenant=tenant)
            if before is None:
                return None
            if before.state.terminal:
                return before, before
            after = before.evolve(
                state=ending.state,
                error=ending.error or before.error,
                owner=None,
                lease_expires_at=None,
                finished_at=now,
            )
            self.jobs[job_id] = after
            return before, after

    async def cancel_queued(self, *, tenant: str, model: str, now: float) -> list[Job]:
        async with self._lock:
            cancelled = []
            for job in list(self.jobs.values()):
                if (
                    job.tenant == tenant
                    and job.model == model
                    and job.state is JobState.QUEUED
                    and job.batch_id is None
                ):
                    self.jobs[job.id] = job.evolve(state=JobState.CANCELLED, finished_at=now)
                    cancelled.append(self.jobs[job.id])
            return cancelled

    async def delete_job(self, job_id: str, *, tenant: str) -> bool:
        async with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.tenant != tenant or job.batch_id is not None:
                return False
            del self.jobs[job_id]
            return True

    async def count_queued(self, *, tenant: str | None, limit: int) -> int:
        found = sum(
            1
            for job in self.jobs.values()
            if job.state is JobState.QUEUED
            and job.service_class < ServiceClass.BATCH
            and tenant in (None, job.tenant)
        )
        return min(found, limit)

    async def expire_overdue(self, *, now: float) -> list[str]:
        async with self._lock:
            expired = []
            for job in list(self.jobs.values()):
                if (
                    job.state in (JobState.QUEUED, JobState.RUNNING)
                    and job.deadline_at is not None
                    and job.deadline_at <= now
                ):
                    self.jobs[job.id] = job.evolve(
                        state=JobState.EXPIRED,
                        error=JobError("timeout", "the job passed its deadline"),
                        owner=None,
                        lease_expires_at=None,
                        finished_at=now,
                    )
                    expired.append(job.id)
            return expired

    async def metrics(self, *, tenant: str, model: str | None) -> QueueMetrics:
        running = waiting = total = 0
        for job in self.jobs.values():
            if job.tenant != tenant or (model is not None and job.model != model):
                continue
            total += 1
            running += job.state is JobState.RUNNING
            waiting += job.state is JobState.QUEUED
        return QueueMetrics(running=running, waiting=waiting, total=total)

    async def count_active(self, *, tenant: str | None = None) -> list[ActiveCount]:
        counts: Counter[tuple[str, ServiceClass, JobState, bool]] = Counter(
            (job.model, job.service_class, job.state, job.batch_id is not None)
            for job in self.jobs.values()
            if job.state in _ACTIVE and tenant in (None, job.tenant)
        )
        return [
            ActiveCount(model=m, service_class=c, state=s, in_batch=b, count=n)
            for (m, c, s, b), n in counts.items()
        ]

    async def finished_counts(
        self, *, tenant: str | None, since: float, until: float, bucket: float
    ) -> list[FinishedCount]:
        sums: dict[int, list[int]] = {}
        for job in self.jobs.values():
            ended = job.finished_at
            if ended is None or not since <= ended < until or tenant not in (None, job.tenant):
                continue
            row = sums.setdefault(int((ended - since) // bucket), [0, 0, 0, 0])
            row[0] += 1
            row[1] += job.state is JobState.SUCCEEDED
            row[2] += job.usage.prompt_tokens
            row[3] += job.usage.completion_tokens
        return [
            FinishedCount(
                bucket=b, jobs=n, succeeded=ok, prompt_tokens=prompt, completion_tokens=out
            )
            for b, (n, ok, prompt, out) in sorted(sums.items())
        ]

    # -- API keys ---------------------------------------------------------------

    async def insert_key(self, key: ApiKey, *, key_hash: str) -> None:
        async with self._lock:
            if any(existing.name == key.name for existing, _ in self.keys.values()):
                raise Conflict(f"a key named {key.name!r} already exists", param="name")
            self.keys[key.id] = (key, key_hash)

    async def find_key(self, key_hash: str) -> ApiKey | None:
        for key, stored_hash in self.keys.values():
            if stored_hash == key_hash:
                return key
        return None

    async def list_keys(self) -> list[ApiKey]:
        return sorted((key for key, _ in self.keys.values()), key=lambda k: k.created_at)

    async def revoke_key(self, id_or_name: str, *, now: float) -> ApiKey | None:
        async with self._lock:
            for key_id, (key, key_hash) in self.keys.items():
                if id_or_name in (key.id, key.name):
                    revoked = key if key.revoked_at else _revoked(key, now)
                    self.keys[key_id] = (revoked, key_hash)
                    return revoked
            return None


def _lease_expired(job: Job, now: float) -> bool:
    return job.lease_expires_at is not None and job.lease_expires_at < now


def _revoked(key: ApiKey, now: float) -> ApiKey:
    return dataclasses.replace(key, revoked_at=now)
