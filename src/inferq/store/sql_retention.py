"""The retention part of the SQL store (:class:`~inferq.core.retention.RetentionStore`)."""

from __future__ import annotations

from typing import Generic, TypeVar

from inferq.core.models import Batch, FileRecord
from inferq.store import rows
from inferq.store.executor import Executor

E = TypeVar("E", bound=Executor)


class SqlRetention(Generic[E]):
    """What the retention sweep reads and deletes, over the executor ``db``."""

    db: E

    # -- what it reads -------------------------------------------------------------------

    async def expired_files(self, *, now: float, limit: int) -> list[FileRecord]:
        found = await self.db.fetch_all("expired_files", {"now": now, "limit": limit})
        return [rows.row_to_file(r) for r in found]

    async def finished_batches(self, *, cutoff: float, limit: int) -> list[Batch]:
        found = await self.db.fetch_all("finished_batches", {"cutoff": cutoff, "limit": limit})
        return [rows.row_to_batch(r) for r in found]

    async def known_records(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        return {r["id"] for r in await self.db.fetch_all("known_records", {"ids": ids})}

    # -- what it deletes -----------------------------------------------------------------

    async def purge_jobs(self, *, cutoff: float, limit: int, workflow_origin: str) -> int:
        params = {"cutoff": cutoff, "limit": limit, "workflow_origin": workflow_origin}
        return await self.db.execute("purge_jobs", params)

    async def purge_batch_rows(self, *, tenant: str, batch_id: str, limit: int) -> int:
        params = {"tenant": tenant, "batch_id": batch_id, "limit": limit}
        return await self.db.execute("purge_batch_rows", params)
