"""Retention: what expires, and the sweep that deletes it (records first, then bytes).

* A file with an ``expires_at`` (OpenAI's ``expires_after`` on an upload, a batch's
  ``output_expires_after`` on its outputs) answers 404 from that moment
  (:func:`inferq.core.files.expired`), and is deleted by the next sweep, unless an
  open batch reads it.
* Jobs (not batch rows) are kept ``days`` after they ended; a workflow's node jobs
  while their tenant has an open workflow job.
* Batches and document workflow jobs are kept ``days`` after they ended, then deleted
  with their rows (in chunks), their output files and their blobs.
* A blob under a record's folder (``files/<id>/``, ``workflows/<id>/``) whose record
  does not exist is an orphan (an upload that died between its bytes and its record, a
  sweep that died between a record and its bytes); one older than ``orphan_age`` is
  deleted. Younger ones may be an upload still on its way.

Every step is bounded (``chunk`` records per store call), so a sweep never holds a
long transaction, and a sweep that dies half-way leaves only what the next one finds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from inferq.core.batch_format import BatchFormat
from inferq.core.errors import InvalidRequest
from inferq.core.files import blob_key, file_names
from inferq.core.models import Batch, FileRecord
from inferq.core.ports import BlobStore, RetentionStore, tenant_prefix
from inferq.core.workflow_meta import DIALECT as WORKFLOWS

log = logging.getLogger("inferq.retention")
T = TypeVar("T")

DAY = 86400.0
#: the folders of blob keys that belong to one record (``<tenant>/<folder>/<id>/…``)
RECORD_FOLDERS = ("files", "workflows")


def expires_after(value: Any, *, param: str) -> int:
    """The seconds of OpenAI's ``{"anchor": "created_at", "seconds": N}``
    (N from an hour to 30 days), checked."""
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise InvalidRequest(f"{param}: anchor must be 'created_at'", param=f"{param}.anchor")
    seconds = value.get("seconds")
    # a form field's text: ASCII digits only ("²" is a digit to isdigit, not to int), and
    # few of them (int() refuses thousands)
    if isinstance(seconds, str) and seconds.isascii() and seconds.isdigit() and len(seconds) <= 18:
        seconds = int(seconds)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 3600 <= seconds <= 2592000:
        raise InvalidRequest(
            f"{param}: seconds must be an integer from 3600 (1 hour) to 2592000 (30 days)",
            param=f"{param}.seconds",
        )
    return seconds


def output_expiry(value: Any) -> dict[str, int]:
    """What a batch's meta keeps of OpenAI's ``output_expires_after`` (checked)."""
    if value is None:
        return {}
    return {"output_expires_after": expires_after(value, param="output_expires_after")}


def with_output_expiry(batch: Batch, records: list[FileRecord]) -> list[FileRecord]:
    """A batch's output records, made to expire as its ``output_expires_after`` says."""
    seconds = batch.meta.get("output_expires_after")
    if not isinstance(seconds, int):
        return records
    at = batch.created_at + seconds
    return [r.evolve(meta={**r.meta, "expires_at": at}) for r in records]


@dataclass(frozen=True, slots=True)
class RetentionLimits:
    #: days finished jobs, batches and their outputs are kept (0: forever)
    days: float = 30.0
    #: records handled per store call
    chunk: int = 500
    #: a blob without a record is deleted once older than this (seconds)
    orphan_age: float = 3600.0


@dataclass(frozen=True, slots=True)
class SweepCounts:
    """What one pass deleted: expired files, finished jobs and batches, orphan blobs."""

    files: int = 0
    jobs: int = 0
    batches: int = 0
    orphans: int = 0

    @property
    def total(self) -> int:
        return self.files + self.jobs + self.batches + self.orphans


@dataclass(kw_only=True, eq=False)
class RetentionService:
    store: RetentionStore
    blobs: BlobStore
    formats: Mapping[str, BatchFormat] = field(default_factory=dict)
    limits: RetentionLimits = field(default_factory=RetentionLimits)
    clock: Callable[[], float] = time.time

    async def sweep(self, *, orphans: bool = True) -> SweepCounts:
        """One bounded pass over each kind of expired thing."""
        now = self.clock()
        files = await self.expired_files(now)
        jobs = batches = 0
        if self.limits.days > 0:
            cutoff = now - self.limits.days * DAY
            jobs = await self.store.purge_jobs(
                cutoff=cutoff, limit=self.limits.chunk, workflow_origin=WORKFLOWS
            )
            batches = await self.old_batches(cutoff)
        found = await self.orphans(now) if orphans else 0
        counts = SweepCounts(files=files, jobs=jobs, batches=batches, orphans=found)
        if counts.total:
            log.info(
                "retention: deleted %d expired files, %d jobs, %d batches, %d orphan blobs",
                files, jobs, batches, found,
            )  # fmt: skip
        return counts

    async def expired_files(self, now: float) -> int:
        records = await self.store.expired_files(now=now, limit=self.limits.chunk)
        return await _delete_each(records, self.delete_file)

    async def delete_file(self, record: FileRecord) -> None:
        """The record, then its bytes (a crash between leaves an orphan, swept later)."""
        await self.store.delete_file(record.id, tenant=record.tenant)
        for name in file_names(record):
            await self.blobs.delete(blob_key(record.tenant, record.id, name))

    async def old_batches(self, cutoff: float) -> int:
        batches = await self.store.finished_batches(cutoff=cutoff, limit=self.limits.chunk)
        return await _delete_each(batches, self.delete_batch)

    async def delete_batch(self, batch: Batch) -> None:
        """Its output files, its rows (in chunks), the record, then its workflow blobs."""
        fmt = self.formats.get(batch.dialect)
        if fmt is not None:
            for output in fmt.output_files(batch):
                record = await self.store.get_file(output.record_id, tenant=batch.tenant)
                if record is not None:
                    await self.delete_file(record)
        while await self.store.purge_batch_rows(
            tenant=batch.tenant, batch_id=batch.id, limit=self.limits.chunk
        ):
            pass
        await self.store.delete_batch(batch.id, tenant=batch.tenant)
        async for key in self.blobs.names(f"{tenant_prefix(batch.tenant)}/workflows/{batch.id}/"):
            await self.blobs.delete(key)

    async def orphans(self, now: float) -> int:
        """Delete the blobs of records that do not exist, older than ``orphan_age``."""
        deleted = 0
        page: dict[str, list[str]] = {}
        async for key in self.blobs.names():
            record = record_of(key)
            if record is not None:
                page.setdefault(record, []).append(key)
            if len(page) >= self.limits.chunk:
                deleted += await self._drop_orphans(page, now)
                page = {}
        if page:
            deleted += await self._drop_orphans(page, now)
        return deleted

    async def _drop_orphans(self, page: dict[str, list[str]], now: float) -> int:
        known = await self.store.known_records(sorted(page))
        deleted = 0
        for record, keys in page.items():
            if record in known:
                continue
            for key in keys:
                created = await self.blobs.created_at(key)
                if created is not None and created < now - self.limits.orphan_age:
                    deleted += await self.blobs.delete(key)
        return deleted


async def _delete_each(found: Sequence[T], delete: Callable[[T], Awaitable[None]]) -> int:
    """Delete each of ``found`` in turn; how many that was."""
    for item in found:
        await delete(item)
    return len(found)


def record_of(key: str) -> str | None:
    """The id of the record a blob key belongs to, or None for keys of no record."""
    parts = key.split("/")
    if len(parts) >= 4 and parts[1] in RECORD_FOLDERS:
        return parts[2]
    return None
