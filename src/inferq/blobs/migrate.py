"""Copying blobs between stores (``inferq blobs migrate --from URL --to URL``).

Each blob streams from one store into the other (memory stays at a chunk or two) while
its SHA-256 is taken, then the copy is read back and hashed: a copy that differs is an
error, never a silent success. A blob the target already holds with the same bytes is
skipped, so a migration that stopped halfway (a crash, Ctrl-C) is resumed by running it
again. The source is only read: switching ``INFERQ_BLOB_URL`` over, and deleting the
old store, stay the operator's steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from inferq.blobs.base import BlobStore
from inferq.core.errors import NotFound, StoreError


@dataclass
class MigrateReport:
    """What a migration did."""

    #: blobs copied, and their bytes
    copied: int = 0
    copied_bytes: int = 0
    #: blobs the target already held with the same bytes
    skipped: int = 0
    #: blobs deleted from the source while the migration ran
    vanished: int = 0


async def digest(store: BlobStore, key: str) -> tuple[int, bytes]:
    """The size and SHA-256 of the blob at ``key``."""
    hashed = hashlib.sha256()
    size = 0
    async for data in store.read(key):
        hashed.update(data)
        size += len(data)
    return size, hashed.digest()


async def _hashing(chunks: AsyncIterator[bytes], into: hashlib._Hash) -> AsyncIterator[bytes]:
    async for data in chunks:
        into.update(data)
        yield data


async def copy_one(source: BlobStore, target: BlobStore, key: str) -> tuple[bool, int]:
    """Copy the blob at ``key`` unless the target holds the same bytes; whether it was
    copied and its size. NotFound when the source no longer has it."""
    size = await source.size(key)
    if size is None:
        raise NotFound(f"blob {key} not found")
    if await target.size(key) == size and await digest(target, key) == await digest(source, key):
        return False, size
    hashed = hashlib.sha256()
    written = await target.put(key, _hashing(source.read(key), hashed))
    if await digest(target, key) != (written, hashed.digest()):
        raise StoreError(f"the copy of blob {key} reads back different bytes")
    return True, written


async def migrate(
    source: BlobStore,
    target: BlobStore,
    *,
    prefix: str = "",
    progress: Callable[[str, bool, int], None] | None = None,
) -> MigrateReport:
    """Copy every blob under ``prefix`` from ``source`` to ``target`` (see the module);
    ``progress(key, copied, size)`` after each."""
    report = MigrateReport()
    async for key in source.names(prefix):
        try:
            copied, size = await copy_one(source, target, key)
        except NotFound:
            report.vanished += 1
            continue
        if copied:
            report.copied += 1
            report.copied_bytes += size
        else:
            report.skipped += 1
        if progress is not None:
            progress(key, copied, size)
    return report
