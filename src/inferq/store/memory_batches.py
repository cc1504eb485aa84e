"""Files, batches and batch rows of the in-memory store (:class:`~inferq.store.memory.MemoryStore`).

The state every part of the fake shares lives here too: the jobs (a batch's rows
are jobs), a lock and one sequence for ``seq``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Sequence

from inferq.core.errors import Conflict
from inferq.core.models import Batch, BatchCounts, FileRecord, Job
from inferq.core.ports import BatchFilter, Ending, FileFilter, RowFilter
from inferq.core.states import JobState
from inferq.store.rows import COUNTED


class MemoryBatches:
    """The :class:`~inferq.core.ports.BatchStore` and :class:`~inferq.core.ports.FileStore`
    ports in dictionaries."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.files: dict[tuple[str, str], FileRecord] = {}
        self.batches: dict[tuple[str, str], Batch] = {}
        self._seq = itertools.count(1)
        self._lock = asyncio.Lock()

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

    async def list_files(self, flt: FileFilter) -> list[FileRecord]:
        found = [
            f
            for f in self.files.values()
            if f.tenant == flt.tenant
            and f.kind == flt.kind
            and (flt.purpose is None or f.purpose == flt.purpose)
        ]
        if flt.after is not None:
            anchor = self.files.get((flt.tenant, flt.after))
            if anchor is None:
                return []
            found = [f for f in found if f.seq < anchor.seq]
        found.sort(key=lambda f: f.seq, reverse=True)
        return found[: flt.limit]

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

    async def list_batches(self, flt: BatchFilter) -> list[Batch]:
        found = [
            b
            for b in self.batches.values()
            if (flt.tenant is None or b.tenant == flt.tenant)
            and (flt.dialect is None or b.dialect == flt.dialect)
            and (flt.states is None or b.state in flt.states)
        ]
        if (after := flt.after) is not None:
            anchor = next((b for b in found if b.id == after), None) or await self.get_batch(
                after, tenant=flt.tenant
            )
            if anchor is None:
                return []
            found = [b for b in found if b.seq < anchor.seq]
        found.sort(key=lambda b: b.seq, reverse=True)
        return found[: flt.limit]

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
            c[COUNTED[row.state]] += 1
            if row.state.terminal:
                c["prompt_tokens"] += row.usage.prompt_tokens
                c["completion_tokens"] += row.usage.completion_tokens
                c["cached_tokens"] += row.usage.cached_tokens
        return BatchCounts(**c)

    async def batch_rows(self, flt: RowFilter) -> list[Job]:
        found = [
            r
            for r in self._rows(flt.tenant, flt.batch_id)
            if (r.batch_line or 0) > flt.after_line
            and (flt.states is None or r.state in flt.states)
        ]
        found.sort(key=lambda r: r.batch_line or 0)
        return found[: flt.limit]

    async def duplicate_custom_ids(
        self, *, tenant: str, batch_id: str, limit: int
    ) -> list[tuple[str, int, int]]:
        lines: dict[str, list[int]] = {}
        for row in self._rows(tenant, batch_id):
            lines.setdefault(row.custom_id or "", []).append(row.batch_line or 0)
        dups = [(cid, min(ls), max(ls)) for cid, ls in lines.items() if len(ls) > 1]
        dups.sort(key=lambda d: d[1])
        return dups[:limit]

    async def finish_rows(self, ending: Ending, *, tenant: str, batch_id: str, now: float) -> int:
        async with self._lock:
            count = 0
            for row in self._rows(tenant, batch_id):
                if not row.state.terminal:
                    self.jobs[row.id] = row.evolve(
                        state=ending.state,
                        error=ending.error,
                        owner=None,
                        lease_expires_at=None,
                        finished_at=now,
                    )
                    count += 1
            return count
