"""In-memory JobStore: the fake used by unit tests and queue benchmarks.

It keeps the same contract as the SQL adapters (the contract suite runs on it),
but nothing survives the process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Collection, Sequence
from typing import Any

from inferq.core.errors import Conflict
from inferq.core.models import (
    ApiKey,
    Batch,
    BatchCounts,
    FileRecord,
    Job,
    JobError,
    JobFilter,
    Lease,
    QueueMetrics,
    Result,
)
from inferq.core.scheduling import claim_order, lease_expired_error
from inferq.core.states import JobState, ServiceClass
from inferq.store.base import JobStore


class MemoryStore(JobStore):
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.keys: dict[str, tuple[ApiKey, str]] = {}
        self.files: dict[tuple[str, str], FileRecord] = {}
        self.batches: dict[tuple[str, str], Batch] = {}
        self._seq = itertools.count(1)
        self._lock = asyncio.Lock()
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
        self,
        *,
        owner: str,
        limit: int,
        now: float,
        lease_seconds: float,
        max_class: ServiceClass = ServiceClass.BATCH,
        models: Collection[str] | None = None,
    ) -> list[Job]:
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
            claimed = []
            for job in candidates[:limit]:
                leased = job.evolve(
                    state=JobState.RUNNING,
                    owner=owner,
                    attempt=job.attempt + 1,
                    lease_expires_at=now + lease_seconds,
                    claimed_at=now,
                )
                self.jobs[job.id] = leased
                claimed.append(leased)
            return claimed

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

    async def set_progress(self, lease: Lease, info: dict[str, Any]) -> bool:
        async with self._lock:
            job = self._held(lease)
            if job is None:
                return False
            self.jobs[job.id] = job.evolve(info={**job.info, **info})
            return True

    async def complete(self, lease: Lease, result: Result, *, now: float) -> bool:
        async with self._lock:
            job = self._held(lease)
            if job is None:
                return False
            self.jobs[job.id] = job.evolve(
                state=JobState.SUCCEEDED,
                result=result,
                info={**job.info, "progress": 1},
                usage=result.usage,
                owner=None,
                lease_expires_at=None,
                finished_at=now,
            )
            return True

    async def fail(self, lease: Lease, error: JobError, *, now: float, retry: bool) -> bool:
        async with self._lock:
            job = self._held(lease)
            if job is None:
                return False
            again = retry and job.attempt < job.max_attempts
            self.jobs[job.id] = job.evolve(
                state=JobState.QUEUED if again else JobState.FAILED,
                error=error,
                owner=None,
                lease_expires_at=None,
                finished_at=None if again else now,
            )
            return True

    async def requeue(self, lease: Lease) -> bool:
        async with self._lock:
            job = self._held(lease)
            if job is None:
                return False
            self.jobs[job.id] = job.evolve(
                state=JobState.QUEUED,
                attempt=job.attempt - 1,
                owner=None,
                lease_expires_at=None,
                claimed_at=None,
            )
            return True

    async def finish(
        self,
        job_id: str,
        *,
        tenant: str | None,
        state: JobState,
        error: JobError | None,
        now: float,
    ) -> tuple[Job, Job] | None:
        async with self._lock:
            before = await self.get_job(job_id, tenant=tenant)
            if before is None:
                return None
            if before.state.terminal:
                return before, before
            after = before.evolve(
                state=state,
                error=error or before.error,
                owner=None,
                lease_expires_at=None,
                finished_at=now,
            )
            self.jobs[job_id] = after
            return before, after

    async def cancel_queued(self, *, tenant: str, model: str, now: float) -> int:
        async with self._lock:
            count = 0
            for job in list(self.jobs.values()):
                if (
                    job.tenant == tenant
                    and job.model == model
                    and job.state is JobState.QUEUED
                    and job.batch_id is None
                ):
                    self.jobs[job.id] = job.evolve(state=JobState.CANCELLED, finished_at=now)
                    count += 1
            return count

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

    # -- files and datasets --------------------------------------------------

    async def insert_file(self, record: FileRecord) -> FileRecord | None:
        async with self._lock:
            if (record.tenant, record.id) in self.files:
                return None
            stored = record.evolve(seq=next(self._seq))
            self.files[record.tenant, record.id] = stored
            return stored

    async def get_file(self, file_id: str, *, tenant: str) -> FileRecord | None:
        return self.files.get((tenant, file_id))

    async def list_files(
        self,
        *,
        tenant: str,
        kind: str,
        limit: int,
        after: str | None = None,
        purpose: str | None = None,
    ) -> list[FileRecord]:
        found = [
            f
            for f in self.files.values()
            if f.tenant == tenant and f.kind == kind and (purpose is None or f.purpose == purpose)
        ]
        if after is not None:
            anchor = self.files.get((tenant, after))
            if anchor is None:
                return []
            found = [f for f in found if f.seq < anchor.seq]
        found.sort(key=lambda f: f.seq, reverse=True)
        return found[:limit]

    async def update_file(self, record: FileRecord) -> bool:
        async with self._lock:
            current = self.files.get((record.tenant, record.id))
            if current is None:
                return False
            self.files[record.tenant, record.id] = current.evolve(
                filename=record.filename, bytes=record.bytes, status=record.status, meta=record.meta
            )
            return True

    async def delete_file(self, file_id: str, *, tenant: str) -> bool:
        async with self._lock:
            return self.files.pop((tenant, file_id), None) is not None

    # -- batches ------------------------------------------------------------------

    async def insert_batch(self, batch: Batch) -> tuple[Batch, bool]:
        async with self._lock:
            if batch.idempotency_key is not None:
                for existing in self.batches.values():
                    if (
                        existing.tenant == batch.tenant
                        and existing.idempotency_key == batch.idempotency_key
                    ):
                        return existing, False
            if (batch.tenant, batch.id) in self.batches:
                raise Conflict(f"a batch with id {batch.id} already exists", param="id")
            stored = batch.evolve(seq=next(self._seq))
            self.batches[batch.tenant, batch.id] = stored
            return stored, True

    async def get_batch(self, batch_id: str, *, tenant: str | None) -> Batch | None:
        if tenant is not None:
            return self.batches.get((tenant, batch_id))
        return next((b for b in self.batches.values() if b.id == batch_id), None)

    async def list_batches(
        self,
        *,
        tenant: str | None,
        dialect: str | None,
        limit: int,
        after: str | None = None,
        states: frozenset[JobState] | None = None,
    ) -> list[Batch]:
        found = [
            b
            for b in self.batches.values()
            if (tenant is None or b.tenant == tenant)
            and (dialect is None or b.dialect == dialect)
            and (states is None or b.state in states)
        ]
        if after is not None:
            anchor = next((b for b in found if b.id == after), None) or await self.get_batch(
                after, tenant=tenant
            )
            if anchor is None:
                return []
            found = [b for b in found if b.seq < anchor.seq]
        found.sort(key=lambda b: b.seq, reverse=True)
        return found[:limit]

    async def active_batches(
        self, *, now: float, limit: int, workflows: bool, after: int = 0
    ) -> list[Batch]:
        found = [
            b
            for b in self.batches.values()
            if not b.state.terminal
            and (b.dialect == "unstructured") == workflows
            and (b.lease_expires_at is None or b.lease_expires_at < now)
            and b.seq > after
        ]
        found.sort(key=lambda b: b.seq)
        return found[:limit]

    async def lease_batch(self, batch: Batch, *, owner: str, now: float, until: float) -> bool:
        async with self._lock:
            current = self.batches.get((batch.tenant, batch.id))
            if current is None or current.state.terminal:
                return False
            if (
                current.owner not in (None, owner)
                and current.lease_expires_at is not None
                and current.lease_expires_at >= now
            ):
                return False
            self.batches[batch.tenant, batch.id] = current.evolve(
                owner=owner, lease_expires_at=until
            )
            return True

    async def update_batch(self, batch: Batch, *, expect: JobState) -> bool:
        async with self._lock:
            current = self.batches.get((batch.tenant, batch.id))
            if current is None or current.state is not expect:
                return False
            self.batches[batch.tenant, batch.id] = batch.evolve(
                seq=current.seq, owner=current.owner, lease_expires_at=current.lease_expires_at
            )
            return True

    async def count_open_batches(self, *, tenant: str) -> int:
        return sum(
            1
            for b in self.batches.values()
            if b.tenant == tenant and b.dialect != "unstructured" and not b.state.terminal
        )

    async def delete_batch(self, batch_id: str, *, tenant: str) -> bool:
        async with self._lock:
            if self.batches.pop((tenant, batch_id), None) is None:
                return False
            for job in list(self.jobs.values()):
                if job.tenant == tenant and job.batch_id == batch_id:
                    del self.jobs[job.id]
            return True

    # -- batch rows ---------------------------------------------------------------

    def _rows(self, tenant: str, batch_id: str) -> list[Job]:
        return [j for j in self.jobs.values() if j.tenant == tenant and j.batch_id == batch_id]

    async def insert_rows(self, rows: Sequence[Job]) -> None:
        async with self._lock:
            for row in rows:
                if row.id not in self.jobs:
                    self.jobs[row.id] = row.evolve(seq=next(self._seq))

    async def release_rows(self, *, tenant: str, batch_id: str) -> int:
        async with self._lock:
            count = 0
            for row in self._rows(tenant, batch_id):
                if row.state is JobState.VALIDATING:
                    self.jobs[row.id] = row.evolve(state=JobState.QUEUED)
                    count += 1
            return count

    async def batch_counts(self, *, tenant: str, batch_id: str) -> BatchCounts:
        c = {f.name: 0 for f in dataclasses.fields(BatchCounts)}
        for row in self._rows(tenant, batch_id):
            c["total"] += 1
            c[_COUNTED[row.state]] += 1
            if row.state.terminal:
                c["prompt_tokens"] += row.usage.prompt_tokens
                c["completion_tokens"] += row.usage.completion_tokens
                c["cached_tokens"] += row.usage.cached_tokens
        return BatchCounts(**c)

    async def batch_rows(
        self,
        *,
        tenant: str,
        batch_id: str,
        after_line: int,
        limit: int,
        states: frozenset[JobState] | None = None,
    ) -> list[Job]:
        found = [
            r
            for r in self._rows(tenant, batch_id)
            if (r.batch_line or 0) > after_line and (states is None or r.state in states)
        ]
        found.sort(key=lambda r: r.batch_line or 0)
        return found[:limit]

    async def duplicate_custom_ids(
        self, *, tenant: str, batch_id: str, limit: int
    ) -> list[tuple[str, int, int]]:
        lines: dict[str, list[int]] = {}
        for row in self._rows(tenant, batch_id):
            lines.setdefault(row.custom_id or "", []).append(row.batch_line or 0)
        dups = [(cid, min(ls), max(ls)) for cid, ls in lines.items() if len(ls) > 1]
        dups.sort(key=lambda d: d[1])
        return dups[:limit]

    async def finish_rows(
        self,
        *,
        tenant: str,
        batch_id: str,
        state: JobState,
        error: JobError,
        now: float,
    ) -> int:
        async with self._lock:
            count = 0
            for row in self._rows(tenant, batch_id):
                if not row.state.terminal:
                    self.jobs[row.id] = row.evolve(
                        state=state,
                        error=error,
                        owner=None,
                        lease_expires_at=None,
                        finished_at=now,
                    )
                    count += 1
            return count

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


#: the BatchCounts field each row state is counted in
_COUNTED = {
    JobState.VALIDATING: "waiting",
    JobState.QUEUED: "waiting",
    JobState.RUNNING: "running",
    JobState.FINALIZING: "running",
    JobState.CANCELLING: "running",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
    JobState.EXPIRED: "cancelled",
}


def _lease_expired(job: Job, now: float) -> bool:
    return job.lease_expires_at is not None and job.lease_expires_at < now


def _revoked(key: ApiKey, now: float) -> ApiKey:
    return dataclasses.replace(key, revoked_at=now)
