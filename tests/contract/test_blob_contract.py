"""The BlobStore contract, run on every adapter: memory (the fake), a local directory
and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferq.blobs import BlobStore, LocalBlobs, MemoryBlobs
from inferq.blobs.postgres import PostgresBlobs
from inferq.core.errors import InvalidRequest, NotFound, PayloadTooLarge, StoreError
from inferq.store.postgres import PostgresStore
from tests.support.postgres import database_url, fresh_schema

#: small stored chunks, so that the tests cross chunk borders with little data
PG_CHUNK = 100_000


@contextlib.asynccontextmanager
async def postgres_blobs(**kw: float) -> AsyncIterator[PostgresBlobs]:
    """PostgresBlobs on a fresh schema that the job store's migrations set up."""
    async with fresh_schema() as schema:
        settings = {"search_path": schema}
        store = PostgresStore(database_url(), server_settings=settings)
        await store.open()
        await store.close()
        pg = PostgresBlobs(database_url(), server_settings=settings, chunk_bytes=PG_CHUNK, **kw)
        await pg.open()
        try:
            yield pg
        finally:
            await pg.close()


@pytest.fixture(params=["memory", "local", "postgres"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "postgres":
        async with postgres_blobs() as pg:
            yield pg
        return
    if request.param == "memory":
        yield MemoryBlobs()
        return
    yield LocalBlobs(tmp_path / "blobs")


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


async def test_concurrent_writers_of_one_name_last_publish_wins_whole(blobs: BlobStore) -> None:
    size = 250_000  # several stored chunks each
    contents = [bytes([65 + i]) * size for i in range(4)]
    writers = [blobs.writer("same") for _ in contents]
    for start in range(0, size, 30_000):  # interleaved writes
        for out, data in zip(writers, contents, strict=True):
            await out.write(data[start : start + 30_000])
    await asyncio.gather(*(out.commit() for out in writers))
    assert await _read(blobs, "same") in contents
    # and racing whole puts, again and again
    for _ in range(3):
        await asyncio.gather(*(blobs.put("same", _chunks(c[:1000], c[1000:])) for c in contents))
        got = await _read(blobs, "same")
        assert got in contents
        assert await blobs.size("same") == len(got)


async def test_a_writer_abandoned_mid_stream_leaves_nothing(blobs: BlobStore) -> None:
    out = blobs.writer("gone/k")
    await out.write(b"x" * 250_000)
    del out  # never committed nor discarded: a crashed process
    assert await blobs.size("gone/k") is None
    with pytest.raises(NotFound):
        await _read(blobs, "gone/k")
    await blobs.put("kept", _chunks(b"old"))
    out = blobs.writer("kept")
    await out.write(b"new" * 100_000)
    del out
    assert await _read(blobs, "kept") == b"old"


async def test_reads_during_a_write_see_the_old_bytes_or_nothing(blobs: BlobStore) -> None:
    old, new = b"o" * 300_000, b"n" * 310_000
    out = blobs.writer("r")
    await out.write(new[:200_000])
    with pytest.raises(NotFound):
        await _read(blobs, "r")
    await out.discard()
    await blobs.put("r", _chunks(old))
    out = blobs.writer("r")
    await out.write(new[:200_000])
    assert await _read(blobs, "r") == old
    # a read that started before the commit finishes with the old bytes
    reading = blobs.read("r", chunk=4096)
    first = await anext(reading)
    await out.write(new[200_000:])
    await out.commit()
    rest = b"".join([c async for c in reading])
    assert first + rest == old
    assert await _read(blobs, "r") == new
    # and one that starts before a delete
    reading = blobs.read("r", chunk=4096)
    first = await anext(reading)
    assert await blobs.delete("r") is True
    assert first + b"".join([c async for c in reading]) == new


async def test_deleting_missing_names(blobs: BlobStore) -> None:
    assert await blobs.delete("never/was/here") is False
    await blobs.put("once", _chunks(b"x"))
    assert await blobs.delete("once") is True
    assert await blobs.delete("once") is False
    assert await blobs.size("once") is None


@pytest.mark.parametrize(
    "key", ["t-0a1b/file-AbC_9.jsonl", ".hidden/..x/x..", "-/_/.../a.b.c", "z" * 200, "a_/-b"]
)
async def test_odd_keys_the_rule_allows(blobs: BlobStore, key: str) -> None:
    await blobs.put(key, _chunks(b"odd"))
    assert await _read(blobs, key) == b"odd"
    assert await blobs.size(key) == 3
    assert await blobs.delete(key) is True


def _megabyte(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(4, "big")).digest() * (1 << 15)


@pytest.mark.parametrize("adapter", ["local", "postgres"])  # memory holds whole blobs
async def test_a_50_mb_blob_streams_with_flat_memory(adapter: str, tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        store: BlobStore
        if adapter == "postgres":
            store = await stack.enter_async_context(postgres_blobs())
        else:
            store = LocalBlobs(tmp_path)
        expected = hashlib.sha256()
        tracemalloc.start()
        try:
            async with store.writer("big/object") as out:
                for i in range(50):
                    data = _megabyte(i)
                    expected.update(data)
                    await out.write(data)
                    del data
            got = hashlib.sha256()
            total = 0
            async for piece in store.read("big/object"):
                got.update(piece)
                total += len(piece)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert total == 50 << 20
        assert got.digest() == expected.digest()
        assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while streaming 50 MiB"


async def test_postgres_sweeps_abandoned_and_retired_uploads() -> None:
    now = [1000.0]
    async with postgres_blobs(clock=lambda: now[0], sweep_every=1e9) as pg:
        out = pg.writer("k")
        await out.write(b"a" * 250_000)  # two chunks sent, then the writer dies
        await pg.put("k", _chunks(b"first"))
        await pg.put("k", _chunks(b"second"))  # retires "first"
        assert await _count(pg, "blob_uploads") == 2
        now[0] += pg.grace - 1
        assert await pg.sweep() == 0  # not yet: a slow writer or a long read may need them
        now[0] += 2
        assert await pg.sweep() == 2
        assert await _count(pg, "blob_uploads") == 0
        assert await _count(pg, "blob_chunks") == 1  # the current "second"
        assert await _read(pg, "k") == b"second"
        # the abandoned writer, should it wake up, cannot publish what was swept
        with pytest.raises(StoreError, match="swept"):
            await out.write(b"b" * 100_000)


async def test_postgres_a_read_outliving_the_grace_fails_rather_than_truncates() -> None:
    now = [1000.0]
    async with postgres_blobs(clock=lambda: now[0], sweep_every=1e9) as pg:
        await pg.put("k", _chunks(b"x" * 300_000))
        reading = pg.read("k", chunk=PG_CHUNK)
        await anext(reading)
        await pg.delete("k")
        now[0] += pg.grace + 1
        await pg.sweep()
        with pytest.raises(StoreError, match="removed while it was read"):
            _ = [c async for c in reading]


async def _count(pg: PostgresBlobs, table: str) -> int:
    return int(await pg._fetchval(f"SELECT count(*) FROM {table}"))


async def test_postgres_a_failing_sweep_never_fails_the_write_it_follows(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with postgres_blobs(sweep_every=0) as pg:

        async def broken() -> int:
            raise StoreError("PostgreSQL failed: the sweep broke")

        monkeypatch.setattr(pg, "sweep", broken)
        await pg.put("k", _chunks(b"kept"))  # committed before the sweep runs
        assert await _read(pg, "k") == b"kept"
        assert await pg.delete("k")
        assert "could not sweep" in caplog.text
