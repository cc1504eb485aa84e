"""Retention in the memory store (:class:`~inferq.core.retention.RetentionStore`)."""

from __future__ import annotations

from inferq.core.files import expired
from inferq.core.models import Batch, FileRecord, Job
from inferq.store.memory_batches import MemoryBatches


class MemoryRetention(MemoryBatches):
    """The sweep's queries over the fake's dictionaries."""

    def _open_batches(self) -> list[Batch]:
        return [b for b in self.batches.values() if not b.state.terminal]

    async def expired_files(self, *, now: float, limit: int) -> list[FileRecord]:
        read = {(b.tenant, b.input_file_id) for b in self._open_batches()}
        found = [f for f in self.files.values() if expired(f, now) and (f.tenant, f.id) not in read]
        found.sort(key=lambda f: f.meta["expires_at"])
        return found[:limit]

    async def purge_jobs(self, *, cutoff: float, limit: int, workflow_origin: str) -> int:
        busy = {b.tenant for b in self._open_batches() if b.dialect == workflow_origin}

        def old(job: Job) -> bool:
            return (
                job.batch_id is None
                and job.state.terminal
                and job.finished_at is not None
                and job.finished_at < cutoff
                and not (job.origin == workflow_origin and job.tenant in busy)
            )

        async with self._lock:
            gone = sorted(
                (j for j in self.jobs.values() if old(j)), key=lambda j: j.finished_at or 0
            )
            for job in gone[:limit]:
                del self.jobs[job.id]
            return len(gone[:limit])

    async def finished_batches(self, *, cutoff: float, limit: int) -> list[Batch]:
        found = [
            b
            for b in self.batches.values()
            if b.state.terminal and (b.finished_at or b.created_at) < cutoff
        ]
        return sorted(found, key=lambda b: b.seq)[:limit]

    async def purge_batch_rows(self, *, tenant: str, batch_id: str, limit: int) -> int:
        async with self._lock:
            rows = [
                j.id for j in self.jobs.values() if j.tenant == tenant and j.batch_id == batch_id
            ]
            for job_id in rows[:limit]:
                del self.jobs[job_id]
            return len(rows[:limit])

    async def known_records(self, ids: list[str]) -> set[str]:
        present = {record_id for _, record_id in self.files} | {b for _, b in self.batches}
        return present & set(ids)
