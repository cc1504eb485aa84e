"""BlobStore on a local directory (the default; a shared volume serves a fleet).

A writer fills a temporary file beside the target, then fsyncs it, renames it
into place and fsyncs the directory: a blob is either whole and durable or absent.
File I/O runs on worker threads so the event loop never blocks on the disk.

Blobs hold users' data: the directories this adapter creates are 0700 and the
files 0600, whatever the umask.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from inferq.blobs.base import CHUNK, BlobStore, BlobWriter, check_key, span
from inferq.core.errors import NotFound

#: how much a writer buffers before handing bytes to a thread
_BUFFER = 1 << 20
#: a writer's temporary file (``.NAME.HEX.part``), never a blob
_PART = re.compile(r"\..*\.[0-9a-f]{32}\.part")


def _make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 (``mkdir -p`` gives the
    parents the umask's mode)."""
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LocalWriter(BlobWriter):
    def __init__(self, path: Path, max_bytes: int | None) -> None:
        super().__init__(max_bytes)
        self._path = path
        self._tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        self._file: BinaryIO | None = None
        self._buffer = bytearray()

    def _open(self) -> BinaryIO:
        _make_dirs(self._path.parent)
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return os.fdopen(fd, "wb")

    async def _flush(self) -> None:
        if self._file is None:
            self._file = await asyncio.to_thread(self._open)
        data, self._buffer = bytes(self._buffer), bytearray()
        if data:
            await asyncio.to_thread(self._file.write, data)

    async def _write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= _BUFFER:
            await self._flush()

    async def _commit(self) -> None:
        await self._flush()
        assert self._file is not None
        file = self._file

        def finish() -> None:
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(self._tmp, self._path)
            _fsync_dir(self._path.parent)

        await asyncio.to_thread(finish)

    async def _discard(self) -> None:
        file = self._file

        def drop() -> None:
            if file is not None:
                file.close()
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()

        await asyncio.to_thread(drop)


class LocalBlobs(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def writer(self, key: str, *, max_bytes: int | None = None) -> BlobWriter:
        return _LocalWriter(self._path(key), max_bytes)

    async def read(
        self, key: str, *, chunk: int = CHUNK, start: int = 0, stop: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            file = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {key} not found") from None
        try:
            at, end = span(os.fstat(file.fileno()).st_size, start, stop)
            if at:
                file.seek(at)
            # read bigger pieces per thread hop, hand them out in ``chunk``s
            while at < end:
                data = await asyncio.to_thread(file.read, min(max(chunk, _BUFFER), end - at))
                if not data:
                    break
                at += len(data)
                for piece in range(0, len(data), chunk):
                    yield data[piece : piece + chunk]
        finally:
            file.close()

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            return None

    async def created_at(self, key: str) -> float | None:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_mtime
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True

    async def names(self, prefix: str = "") -> AsyncIterator[str]:
        pending = [self.root]
        while pending:
            directory = pending.pop()
            entries = await asyncio.to_thread(_entries, directory)
            for name, is_dir in entries:
                key = str((directory / name).relative_to(self.root))
                if is_dir:
                    pending.append(directory / name)
                elif not _PART.fullmatch(name) and key.startswith(prefix):
                    yield key


def _entries(directory: Path) -> list[tuple[str, bool]]:
    """The names in ``directory`` and whether each is a directory; none when it is gone."""
    try:
        with os.scandir(directory) as found:
            return [(e.name, e.is_dir(follow_symlinks=False)) for e in found]
    except FileNotFoundError:
        return []
