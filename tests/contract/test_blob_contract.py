"""The BlobStore contract, run on every adapter: memory (the fake), a local directory,
PostgreSQL and an S3-compatible bucket.

The bucket is moto's S3 server, started by these tests on loopback: moto's server mode is
the only S3-compatible server installable here (tests/support/s3.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from inferq.blobs import BlobStore, LocalBlobs, MemoryBlobs
from inferq.blobs.postgres import PostgresBlobs
from inferq.blobs.s3 import S3Blobs
from inferq.core.errors import InvalidRequest, NotFound, PayloadTooLarge, StoreError
from inferq.store.postgres import PostgresStore
from tests.support.postgres import database_url, fresh_schema
from tests.support.s3 import S3Server, s3_server

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


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


@pytest.fixture(params=["memory", "local", "postgres", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "postgres":
        async with postgres_blobs() as pg:
            yield pg
        return
    if request.param == "s3":
        yield S3Blobs(request.getfixturevalue("s3").url())
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


@pytest.mark.parametrize("adapter", ["local", "postgres", "s3"])  # memory holds whole blobs
async def test_a_50_mb_blob_streams_with_flat_memory(
    adapter: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Python's allocations stay flat: a chunk or two, or on S3 the parts in flight,
    whose bytes obstore holds until they are sent (bench/blobs.py measures the resident
    memory of 200 MB on every store)."""
    async with contextlib.AsyncExitStack() as stack:
        store: BlobStore
        if adapter == "postgres":
            store = await stack.enter_async_context(postgres_blobs())
        elif adapter == "s3":
            store = S3Blobs(request.getfixturevalue("s3").url())
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
        bound = 8 << 20
        if isinstance(store, S3Blobs):
            bound += (store.concurrency + 1) * store.part_bytes
        assert peak < bound, f"peak {peak / 2**20:.1f} MiB while streaming 50 MiB"


async def test_ranges(blobs: BlobStore) -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes: PostgreSQL chunks of 100,000
    await blobs.put("r", _chunks(data[:70_000], data[70_000:]))
    cases = [
        (0, None),
        (0, 1),
        (1, 2),
        (99_999, 100_001),
        (100_000, 200_000),
        (150_000, None),
        (255_999, None),
        (5, 10**9),
        (256_000, None),
        (300_000, 400_000),
        (10, 10),
        (20, 10),
    ]
    for start, stop in cases:
        pieces = [c async for c in blobs.read("r", chunk=4096, start=start, stop=stop)]
        assert b"".join(pieces) == data[start:stop], (start, stop)
        assert all(0 < len(p) <= 4096 for p in pieces), (start, stop)
    with pytest.raises(NotFound):
        _ = [c async for c in blobs.read("missing", start=5, stop=10)]
    with pytest.raises(ValueError):
        _ = [c async for c in blobs.read("r", start=-1)]


async def test_a_source_that_fails_mid_stream_leaves_nothing(blobs: BlobStore) -> None:
    async def failing() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"z" * 100_000
        raise OSError("the client went away")

    await blobs.put("k", _chunks(b"kept"))
    for key in ("k", "new"):
        with pytest.raises(OSError, match="went away"):
            await blobs.put(key, failing())
    assert await _read(blobs, "k") == b"kept"
    assert await blobs.size("new") is None
    assert sorted([k async for k in blobs.names()]) == ["k"]


async def test_keys_lists_the_published_names(blobs: BlobStore) -> None:
    for key in ("t-1/files/a", "t-1/files/b", "t-1/other", "t-2/files/a", "top"):
        await blobs.put(key, _chunks(key.encode()))
    pending = blobs.writer("t-1/files/pending")
    await pending.write(b"x" * 1000)
    assert sorted([k async for k in blobs.names()]) == [
        "t-1/files/a",
        "t-1/files/b",
        "t-1/other",
        "t-2/files/a",
        "top",
    ]
    assert sorted([k async for k in blobs.names("t-1/")]) == [
        "t-1/files/a",
        "t-1/files/b",
        "t-1/other",
    ]
    assert sorted([k async for k in blobs.names("t-1/files/")]) == ["t-1/files/a", "t-1/files/b"]
    assert sorted([k async for k in blobs.names("t-")]) == sorted(
        ["t-1/files/a", "t-1/files/b", "t-1/other", "t-2/files/a"]
    )
    assert [k async for k in blobs.names("none/")] == []
    await pending.discard()


async def test_download_urls(blobs: BlobStore) -> None:
    """A bucket hands out presigned URLs that plain HTTP reads, ranges included; the
    other stores have none (their bytes go through inferq)."""
    data = bytes(range(256)) * 100
    await blobs.put("d/file.jsonl", _chunks(data))
    url = await blobs.download_url("d/file.jsonl", expires_in=60)
    if not isinstance(blobs, S3Blobs):
        assert url is None
        return
    assert url is not None and "X-Amz-Signature=" in url
    async with httpx.AsyncClient() as client:
        whole = await client.get(url)
        assert whole.status_code == 200 and whole.content == data
        part = await client.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == data[100:200]
    # (moto checks no signatures, so a forged URL cannot be shown refused here)


#: a writer in its own process, killed with SIGKILL once it has sent 24 MiB
_KILLED_WRITER = """
import asyncio, sys
from pathlib import Path
from inferq.blobs import create_blobs

async def main():
    store = create_blobs(sys.argv[1], database_url="", default_dir=Path("."))
    await store.open()
    out = store.writer("kept")
    for i in range(10_000):
        await out.write(bytes([i % 256]) * (1 << 20))
        if i == 24:
            print("writing", flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("adapter", ["local", "postgres", "s3"])  # memory dies with it
async def test_a_writer_killed_mid_stream_leaves_nothing_visible(
    adapter: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        store: BlobStore
        if adapter == "postgres":
            pg = await stack.enter_async_context(postgres_blobs())
            schema = pg.server_settings["search_path"]
            url, store = f"{database_url()}?options=-csearch_path%3D{schema}", pg
        elif adapter == "s3":
            url = request.getfixturevalue("s3").url()
            store = S3Blobs(url)
        else:
            url, store = f"file://{tmp_path}", LocalBlobs(tmp_path)
        await store.put("kept", _chunks(b"old"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _KILLED_WRITER, url, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        proc.kill()
        await proc.wait()
        assert line == b"writing\n"
        assert await _read(store, "kept") == b"old"
        assert await store.size("kept") == 3
        assert [k async for k in store.names()] == ["kept"]
        await store.put("kept", _chunks(b"new"))  # the name is not stuck
        assert await _read(store, "kept") == b"new"


async def test_s3_a_discarded_multipart_upload_is_aborted(s3: S3Server) -> None:
    store = S3Blobs(s3.url(), part_bytes=5 << 20)
    out = store.writer("big")
    for _ in range(3):
        await out.write(b"p" * (4 << 20))  # two parts sent
    assert "<Upload>" in s3.pending_uploads(store.prefix)
    await out.discard()
    assert "<Upload>" not in s3.pending_uploads(store.prefix)
    assert await store.size("big") is None


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
            await out.commit()
        assert await _read(pg, "k") == b"second"


async def test_postgres_a_read_outliving_the_grace_fails_rather_than_truncates() -> None:
    now = [1000.0]
    async with postgres_blobs(clock=lambda: now[0], sweep_every=1e9, read_ahead=1) as pg:
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
