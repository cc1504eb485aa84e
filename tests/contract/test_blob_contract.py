"""The BlobStore contract, run on every adapter: memory (the fake) and a local directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferq.blobs import BlobStore, LocalBlobs, MemoryBlobs
from inferq.core.errors import InvalidRequest, NotFound, PayloadTooLarge


@pytest.fixture(params=["memory", "local"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "memory":
        return MemoryBlobs()
    return LocalBlobs(tmp_path / "blobs")


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _read(blobs: BlobStore, key: str, chunk: int = 1 << 16) -> bytes:
    return b"".join([c async for c in blobs.read(key, chunk=chunk)])


async def test_put_then_read_in_chunks(blobs: BlobStore) -> None:
    data = bytes(range(256)) * 1000
    assert await blobs.put("a/b/c.bin", _chunks(data[:1000], data[1000:])) == len(data)
    assert await blobs.size("a/b/c.bin") == len(data)
    pieces = [c async for c in blobs.read("a/b/c.bin", chunk=4096)]
    assert max(len(p) for p in pieces) == 4096
    assert b"".join(pieces) == data


async def test_put_replaces(blobs: BlobStore) -> None:
    await blobs.put("k", _chunks(b"old"))
    await blobs.put("k", _chunks(b"new!"))
    assert await _read(blobs, "k") == b"new!"


async def test_missing_blob(blobs: BlobStore) -> None:
    assert await blobs.size("nope") is None
    assert await blobs.delete("nope") is False
    with pytest.raises(NotFound):
        await _read(blobs, "nope")


async def test_delete(blobs: BlobStore) -> None:
    await blobs.put("k", _chunks(b"x"))
    assert await blobs.delete("k") is True
    assert await blobs.size("k") is None


async def test_a_failed_write_leaves_nothing(blobs: BlobStore) -> None:
    await blobs.put("k", _chunks(b"kept"))
    with pytest.raises(RuntimeError):
        async with blobs.writer("k") as out:
            await out.write(b"half")
            raise RuntimeError("crash mid-write")
    assert await _read(blobs, "k") == b"kept"
    async with blobs.writer("other") as out:
        await out.write(b"x")
        await out.discard()
    assert await blobs.size("other") is None


async def test_max_bytes(blobs: BlobStore) -> None:
    with pytest.raises(PayloadTooLarge):
        await blobs.put("big", _chunks(b"x" * 600, b"x" * 600), max_bytes=1000)
    assert await blobs.size("big") is None
    assert await blobs.put("fits", _chunks(b"x" * 1000), max_bytes=1000) == 1000


async def test_lines_across_chunk_borders(blobs: BlobStore) -> None:
    await blobs.put("l", _chunks(b"one\r\ntw", b"o\n\nthree"))
    assert [line async for line in blobs.lines("l")] == [b"one", b"two", b"", b"three"]


async def test_an_endless_line_is_refused(blobs: BlobStore) -> None:
    await blobs.put("l", _chunks(b"y" * 300_000))
    with pytest.raises(InvalidRequest, match="longer than"):
        _ = [line async for line in blobs.lines("l", max_line=100_000)]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "sp ace", "a/./b"])
async def test_keys_are_checked(blobs: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        await blobs.put(key, _chunks(b"x"))


def test_local_blobs_leave_no_temporary_files(tmp_path: Path) -> None:
    import asyncio

    local = LocalBlobs(tmp_path)

    async def go() -> None:
        await local.put("d/k", _chunks(b"x"))
        with pytest.raises(PayloadTooLarge):
            await local.put("d/j", _chunks(b"xx"), max_bytes=1)

    asyncio.run(go())
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["k"]
