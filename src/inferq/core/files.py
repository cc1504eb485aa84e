"""FileService: uploaded files and datasets, their bytes in the blob store.

OpenAI files are records of kind ``file`` with one blob; Fireworks datasets are
records of kind ``dataset`` that hold named files (``meta["files"]``: name ->
size). Bytes are streamed into the blob store before the record points at them,
so a record never names bytes that are not there.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from inferq.core.errors import Conflict, InvalidRequest, NotFound
from inferq.core.models import FileRecord
from inferq.core.ports import BlobStore, FileFilter, FileStore, tenant_prefix

log = logging.getLogger("inferq.files")

FILE = "file"
DATASET = "dataset"
#: the name of an OpenAI file's only blob
CONTENT = "content"

_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def blob_key(tenant: str, record_id: str, name: str = CONTENT) -> str:
    """Where the bytes of file ``name`` of a record live."""
    return f"{tenant_prefix(tenant)}/files/{record_id}/{name}"


def expired(record: FileRecord, now: float) -> bool:
    """Whether the file has passed its ``expires_at`` (OpenAI's ``expires_after``, a
    batch's ``output_expires_after``): it then answers 404, and the retention sweep
    deletes it."""
    at = record.meta.get("expires_at")
    return isinstance(at, int | float) and at <= now


def check_filename(name: str) -> str:
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidRequest(
            f"file name {name!r} must be 1-200 letters, digits, '.', '_' or '-'",
            param="filename",
        )
    return name


@dataclass(frozen=True, slots=True)
class FileLimits:
    #: the largest upload accepted, in bytes
    max_bytes: int = 200 * 1024 * 1024


@dataclass(kw_only=True, eq=False)
class FileService:
    store: FileStore
    blobs: BlobStore
    limits: FileLimits = field(default_factory=FileLimits)
    clock: Callable[[], float] = time.time

    # -- files ---------------------------------------------------------------------

    async def upload(
        self,
        *,
        tenant: str,
        purpose: str,
        filename: str,
        chunks: AsyncIterable[bytes],
    ) -> FileRecord:
        """Stream an upload into the blob store, then record it."""
        file_id = "file-" + uuid.uuid4().hex
        lines = LineCounter()
        size = await self.blobs.put(
            blob_key(tenant, file_id), lines.count(chunks), max_bytes=self.limits.max_bytes
        )
        record = FileRecord(
            id=file_id,
            tenant=tenant,
            kind=FILE,
            purpose=purpose,
            filename=filename,
            bytes=size,
            created_at=self.clock(),
            status="processed",
            meta={"lines": lines.total},
        )
        stored = await self.store.insert_file(record)
        assert stored is not None, "file ids are unique"
        log.info("file %s uploaded (%d bytes, tenant=%s)", file_id, size, tenant)
        return stored

    async def get(self, file_id: str, *, tenant: str, kind: str = FILE) -> FileRecord:
        record = await self.store.get_file(file_id, tenant=tenant)
        if record is None or record.kind != kind or expired(record, self.clock()):
            noun = "dataset" if kind == DATASET else "file"
            raise NotFound(f"{noun} {file_id} not found", param=f"{noun}_id")
        return record

    async def exists(self, record_id: str, *, tenant: str) -> bool:
        """Whether the tenant has a file or dataset of this id (ids are shared by both)."""
        return await self.store.get_file(record_id, tenant=tenant) is not None

    async def find(self, record_id: str, *, tenant: str) -> FileRecord | None:
        """The tenant's record of this id, of any kind (a batch's output may be a file,
        a dataset or a dialect's own kind of record)."""
        return await self.store.get_file(record_id, tenant=tenant)

    async def expire_after(self, record: FileRecord, seconds: int) -> FileRecord:
        """Make the file expire ``seconds`` after its creation (OpenAI's ``expires_after``)."""
        return await self.update(
            record.evolve(meta={**record.meta, "expires_at": record.created_at + seconds})
        )

    async def update(self, record: FileRecord) -> FileRecord:
        """Store a changed record (its name, its meta); NotFound once it was deleted."""
        if not await self.store.update_file(record):
            noun = "dataset" if record.kind == DATASET else "file"
            raise NotFound(f"{noun} {record.id} not found", param=f"{noun}_id")
        return record

    async def list(
        self,
        *,
        tenant: str,
        kind: str = FILE,
        limit: int = 100,
        after: str | None = None,
        purpose: str | None = None,
    ) -> list[FileRecord]:
        found = await self.store.list_files(
            FileFilter(tenant=tenant, kind=kind, limit=limit, after=after, purpose=purpose)
        )
        now = self.clock()
        return [record for record in found if not expired(record, now)]

    def content(
        self, record: FileRecord, name: str = CONTENT, *, start: int = 0, stop: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes ``[start, stop)`` (all by default) of one of the record's files."""
        return self.blobs.read(blob_key(record.tenant, record.id, name), start=start, stop=stop)

    async def download_url(self, record: FileRecord, name: str, *, expires_in: float) -> str | None:
        """A URL that serves one of the record's files without inferq (a bucket's
        presigned URL), or None when the blob store has none."""
        return await self.blobs.download_url(
            blob_key(record.tenant, record.id, name), expires_in=expires_in
        )

    def lines(self, record: FileRecord, name: str = CONTENT) -> AsyncIterator[bytes]:
        """The lines of one of the record's files (without line ends)."""
        return self.blobs.lines(blob_key(record.tenant, record.id, name))

    async def delete(self, file_id: str, *, tenant: str, kind: str = FILE) -> FileRecord:
        record = await self.get(file_id, tenant=tenant, kind=kind)
        await self.store.delete_file(file_id, tenant=tenant)
        for name in file_names(record):
            await self.blobs.delete(blob_key(tenant, file_id, name))
        log.info("%s %s deleted (tenant=%s)", kind, file_id, tenant)
        return record

    # -- datasets --------------------------------------------------------------

    async def create_dataset(
        self,
        dataset_id: str,
        *,
        tenant: str,
        kind: str = DATASET,
        purpose: str = "dataset",
        filename: str = "",
        meta: dict[str, Any] | None = None,
    ) -> FileRecord:
        """Record a new, empty record of named files (a dataset, or a dialect's own
        ``kind``): ``uploading`` until :meth:`add_dataset_file` puts a file in it.
        Conflict when the id is taken."""
        stored = await self.store.insert_file(
            FileRecord(
                id=dataset_id,
                tenant=tenant,
                kind=kind,
                purpose=purpose,
                filename=filename,
                bytes=0,
                created_at=self.clock(),
                status="uploading",
                meta=dict(meta or {}),
            )
        )
        if stored is None:
            noun = "dataset" if kind == DATASET else "record"
            raise Conflict(f"{noun} {dataset_id} already exists")
        return stored

    async def add_dataset_file(
        self,
        dataset: FileRecord,
        *,
        name: str,
        chunks: AsyncIterable[bytes],
        expected_size: int | None = None,
    ) -> FileRecord:
        """Stream one named file into a dataset (or another record of named files, of
        any kind); the record is then ready."""
        check_filename(name)
        key = blob_key(dataset.tenant, dataset.id, name)
        # a wrong-sized upload is discarded before it replaces the file already there
        lines = LineCounter()
        async with self.blobs.writer(key, max_bytes=self.limits.max_bytes) as out:
            async for data in lines.count(chunks):
                await out.write(data)
            size = out.size
            if expected_size is not None and size != expected_size:
                raise InvalidRequest(
                    f"{name}: received {size} bytes, but the upload endpoint was asked "
                    f"for {expected_size}",
                    param="filenameToSize",
                )
        current = await self.get(dataset.id, tenant=dataset.tenant, kind=dataset.kind)
        files = {**current.meta.get("files", {}), name: size}
        counted = {**current.meta.get("file_lines", {}), name: lines.total}
        updated = current.evolve(
            filename=name,
            bytes=sum(files.values()),
            status="ready",
            meta={**current.meta, "files": files, "file_lines": counted},
        )
        await self.store.update_file(updated)
        return updated


class LineCounter:
    """Counts the non-blank lines of a stream as it passes (requests in a JSONL file)."""

    def __init__(self) -> None:
        self.total = 0
        self._open = False  # the current line has a non-blank byte

    async def count(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for data in chunks:
            pieces = data.split(b"\n")
            for piece in pieces[:-1]:
                if self._open or piece.strip():
                    self.total += 1
                self._open = False
            self._open = self._open or bool(pieces[-1].strip())
            yield data
        if self._open:
            self.total += 1
            self._open = False


def line_count(record: FileRecord) -> int | None:
    """The requests a file or dataset holds, when counted at upload."""
    if record.kind == FILE:
        lines = record.meta.get("lines")
        return lines if isinstance(lines, int) else None
    counted: dict[str, int] = record.meta.get("file_lines", {})
    if set(counted) != set(file_names(record)):
        return None
    return sum(counted.values())


def file_names(record: FileRecord) -> list[str]:
    """The names of a record's files, in a stable order."""
    if record.kind == FILE:
        return [CONTENT]
    return sorted(record.meta.get("files", {}))
