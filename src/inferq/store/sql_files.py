"""The SQL store's files and datasets (:class:`~inferq.core.ports.FileStore`)."""

from __future__ import annotations

from typing import Generic, TypeVar

from inferq.core.models import FileRecord
from inferq.core.ports import FileFilter
from inferq.store import rows
from inferq.store.executor import Executor

E = TypeVar("E", bound=Executor)


class SqlFiles(Generic[E]):
    """File and dataset records over the executor ``db`` (their bytes are blobs)."""

    db: E

    async def insert_file(self, record: FileRecord) -> FileRecord | None:
        row = await self.db.fetch_one("insert_file", rows.file_params(record))
        return record.evolve(seq=int(row["seq"])) if row else None

    async def get_file(self, file_id: str, *, tenant: str) -> FileRecord | None:
        row = await self.db.fetch_one("get_file", {"id": file_id, "tenant": tenant})
        return rows.row_to_file(row) if row else None

    async def list_files(self, flt: FileFilter) -> list[FileRecord]:
        found = await self.db.fetch_all("list_files", rows.filter_params(flt))
        return [rows.row_to_file(r) for r in found]

    async def update_file(self, record: FileRecord) -> bool:
        return await self.db.execute("update_file", rows.file_params(record)) > 0

    async def delete_file(self, file_id: str, *, tenant: str) -> bool:
        return await self.db.execute("delete_file", {"id": file_id, "tenant": tenant}) > 0
