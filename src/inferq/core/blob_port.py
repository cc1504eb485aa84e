"""The BlobStore port, owned by core: the bytes of uploaded files, datasets and outputs.

The records that name those bytes are a :class:`~inferq.core.ports.FileStore`'s; the
adapters (local folder, memory, PostgreSQL, S3) are in ``inferq.blobs`` and pass the same
contract suite (``tests/contract/test_blob_contract.py``). :mod:`inferq.core.ports`
re-exports every name here.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType

from inferq.core.errors import InvalidRequest, PayloadTooLarge

#: chunk size for reads
CHUNK = 1 << 16


def tenant_prefix(tenant: str) -> str:
    """A path-safe, fixed-length folder name for a tenant's blobs."""
    return "t-" + hashlib.sha256(tenant.encode()).hexdigest()[:24]


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
    """The bytes of uploaded files, datasets and outputs, streamed in chunks.

    A blob appears atomically: readers see the old bytes or the new ones, never a
    half-written blob, and a crash while writing leaves nothing.
    """

    async def open(self) -> None:
        """Connect, for an adapter that needs to (a database); the default does nothing."""
        return None

    async def close(self) -> None:
        """Release what :meth:`open` took; the default does nothing."""
        return None

    @abstractmethod
    def writer(self, key: str, *, max_bytes: int | None = None) -> BlobWriter:
        """A writer that replaces the blob at ``key`` when committed."""

    @abstractmethod
    def read(
        self, key: str, *, chunk: int = CHUNK, start: int = 0, stop: int | None = None
    ) -> AsyncIterator[bytes]:
        """The blob's bytes ``[start, stop)`` (all of them by default) in chunks;
        :class:`~inferq.core.errors.NotFound` when missing. A range past the end is cut
        at the end."""

    @abstractmethod
    async def size(self, key: str) -> int | None:
        """The blob's size, or None when there is none."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the blob; False when there was none."""

    async def created_at(self, key: str) -> float | None:
        """When the blob was written (seconds since the epoch), None when there is none
        or the store cannot tell; the retention sweep removes only orphans it can date."""
        return None

    @abstractmethod
    def names(self, prefix: str = "") -> AsyncIterator[str]:
        """The names of the blobs under ``prefix``, in no set order (``inferq blobs
        migrate`` walks them)."""

    async def download_url(self, key: str, *, expires_in: float) -> str | None:
        """A URL that serves the blob for ``expires_in`` seconds without inferq (a
        bucket's presigned URL), or None: the bytes then pass through inferq."""
        return None

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
