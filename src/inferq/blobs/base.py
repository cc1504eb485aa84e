"""The BlobStore port: the bytes of uploaded files, datasets and batch outputs.

Adapters: :mod:`inferq.blobs.memory` (the fake) and :mod:`inferq.blobs.local`
(a directory, the default). Both pass ``tests/contract/test_blob_contract.py``.

Bytes always move as streams of chunks, never whole files, so memory stays flat
whatever the size. A blob appears atomically: readers see the old bytes or the
new ones, never a half-written file, and a crash while writing leaves nothing.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType

from inferq.core.errors import InvalidRequest, PayloadTooLarge

#: chunk size for reads
CHUNK = 1 << 16

_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def tenant_prefix(tenant: str) -> str:
    """A path-safe, fixed-length folder name for a tenant's blobs."""
    return "t-" + hashlib.sha256(tenant.encode()).hexdigest()[:24]


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobWriter(ABC):
    """Bytes written in pieces; they become the blob on :meth:`commit`, or vanish."""

    def __init__(self, max_bytes: int | None) -> None:
        self.size = 0
        self.max_bytes = max_bytes
        #: committed or discarded: nothing more can be written
        self.finished = False

    async def write(self, data: bytes) -> None:
        if self.finished:
            raise RuntimeError("write to a committed or discarded blob writer")
        self.size += len(data)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise PayloadTooLarge(f"the file is larger than the limit of {self.max_bytes} bytes")
        await self._write(data)

    async def commit(self) -> int:
        """Make the bytes durable and visible under the key; return the size."""
        if self.finished:
            raise RuntimeError("commit of a committed or discarded blob writer")
        self.finished = True
        await self._commit()
        return self.size

    async def discard(self) -> None:
        """Drop what was written (idempotent; a no-op after commit)."""
        if not self.finished:
            self.finished = True
            await self._discard()

    @abstractmethod
    async def _write(self, data: bytes) -> None: ...

    @abstractmethod
    async def _commit(self) -> None: ...

    @abstractmethod
    async def _discard(self) -> None: ...

    async def __aenter__(self) -> BlobWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            await self.discard()
        elif not self.finished:
            await self.commit()


class BlobStore(ABC):
    @abstractmethod
    def writer(self, key: str, *, max_bytes: int | None = None) -> BlobWriter:
        """A writer that replaces the blob at ``key`` when committed."""

    @abstractmethod
    def read(self, key: str, *, chunk: int = CHUNK) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks; :class:`~inferq.core.errors.NotFound` when missing."""

    @abstractmethod
    async def size(self, key: str) -> int | None:
        """The blob's size, or None when there is none."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the blob; False when there was none."""

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> int:
        """Stream ``chunks`` into the blob at ``key``; return its size."""
        async with self.writer(key, max_bytes=max_bytes) as out:
            async for data in chunks:
                await out.write(data)
        return out.size

    async def lines(self, key: str, *, max_line: int | None = None) -> AsyncIterator[bytes]:
        """The blob's lines (without line ends), read chunk by chunk.

        Raises :class:`~inferq.core.errors.InvalidRequest` for a line longer than
        ``max_line`` bytes, so one endless line cannot fill the memory.
        """
        tail = b""
        async for data in self.read(key):
            pieces = (tail + data).split(b"\n")
            tail = pieces.pop()
            if max_line is not None and len(tail) > max_line:
                raise InvalidRequest(f"a line is longer than {max_line} bytes")
            for piece in pieces:
                yield piece.removesuffix(b"\r")
        if tail:
            yield tail.removesuffix(b"\r")
