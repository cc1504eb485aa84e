"""Output files of node jobs: what a handler returns, stored under its job's tenant
(:func:`~inferq.core.node_checks.output_key`) and read back by that tenant only."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from inferq.core.errors import NotFound
from inferq.core.models import Job
from inferq.core.node_checks import FILE_NAME, check_file_name, output_key
from inferq.core.ports import BlobStore, JobLookup


@dataclass(frozen=True, slots=True)
class NodeFiles:
    store: JobLookup
    blobs: BlobStore
    #: the largest output file
    max_bytes: int

    async def put(self, job: Job, name: str, chunks: AsyncIterable[bytes]) -> None:
        """Store an output file of ``job`` (413 above the limit)."""
        check_file_name(name)
        await self.blobs.put(output_key(job, name), chunks, max_bytes=self.max_bytes)

    async def read(
        self, *, tenant: str, job_id: str, name: str
    ) -> tuple[int, AsyncIterator[bytes]]:
        """An output file of the tenant's job: its size and bytes (404 for another
        tenant's job or a file that is not there)."""
        job = await self.store.get_job(job_id, tenant=tenant)
        if job is None or not FILE_NAME.match(name):
            raise NotFound("no such output file")
        key = output_key(job, name)
        size = await self.blobs.size(key)
        if size is None:
            raise NotFound("no such output file")
        return size, self.blobs.read(key)
