"""In-memory BlobStore: the fake for unit tests (holds whole blobs, so small ones only)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from inferq.blobs.base import CHUNK, BlobStore, BlobWriter, check_key, span
from inferq.core.errors import NotFound


class _MemoryWriter(BlobWriter):
    def __init__(self, store: MemoryBlobs, key: str, max_bytes: int | None) -> None:
        super().__init__(max_bytes)
        self._store = store
        self._key = key
        self._parts: list[bytes] = []

    async def _write(self, data: bytes) -> None:
        self._parts.append(data)

    async def _commit(self) -> None:
        self._store.blobs[self._key] = b"".join(self._parts)
        self._store.written[self._key] = time.time()
        self._parts = []

    async def _discard(self) -> None:
        self._parts = []


class MemoryBlobs(BlobStore):
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        #: when each blob was written
        self.written: dict[str, float] = {}

    def writer(self, key: str, *, max_bytes: int | None = None) -> BlobWriter:
        return _MemoryWriter(self, check_key(key), max_bytes)

    async def read(
        self, key: str, *, chunk: int = CHUNK, start: int = 0, stop: int | None = None
    ) -> AsyncIterator[bytes]:
        data = self.blobs.get(check_key(key))
        if data is None:
            raise NotFound(f"blob {key} not found")
        first, end = span(len(data), start, stop)
        for at in range(first, end, chunk):
            yield data[at : min(at + chunk, end)]

    async def size(self, key: str) -> int | None:
        data = self.blobs.get(check_key(key))
        return None if data is None else len(data)

    async def delete(self, key: str) -> bool:
        self.written.pop(key, None)
        return self.blobs.pop(check_key(key), None) is not None

    async def created_at(self, key: str) -> float | None:
        return self.written.get(check_key(key)) if key in self.blobs else None

    async def names(self, prefix: str = "") -> AsyncIterator[str]:
        for key in list(self.blobs):
            if key.startswith(prefix):
                yield key
