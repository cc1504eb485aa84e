"""``inferq blobs migrate --from URL --to URL``: a local directory to PostgreSQL, then
PostgreSQL to an S3-compatible bucket (moto's S3 server on loopback, the only one
installable here), each blob verified by its hash; a second run copies nothing, and a run
after an interruption copies only what is missing or different."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from inferq.blobs import BlobStore, LocalBlobs, create_blobs
from inferq.blobs.migrate import digest
from inferq.store.postgres import PostgresStore
from tests.acceptance.cluster import fresh_schema, schema_url
from tests.support.s3 import S3Server, s3_server
from tests.support.server import inferq

pytestmark = pytest.mark.integration

#: name -> bytes: small, empty, several stored chunks, odd names
BLOBS = {
    "t-a/files/file-1/content": b"one\n" * 10,
    "t-a/files/file-2/content": b"",
    "t-b/files/ds-1/big.jsonl": bytes(range(256)) * 12_000,  # 3 MB
    "t-b/outputs/b-1/.hidden..name": b"odd",
}


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    with s3_server(tmp_path / "moto.log") as server:
        yield server


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_schema() as schema:
        url = schema_url(schema)
        store = PostgresStore(url)
        await store.open()  # the migrations: the blob tables
        await store.close()
        yield url


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _contents(store: BlobStore) -> dict[str, bytes]:
    found = {}
    async for name in store.names():
        found[name] = b"".join([c async for c in store.read(name)])
    return found


def _migrate(source: str, target: str) -> list[str]:
    return inferq("blobs", "migrate", "--from", source, "--to", target).splitlines()


async def test_migrate_between_stores(tmp_path: Path, pg_url: str, s3: S3Server) -> None:
    local = LocalBlobs(tmp_path / "blobs")
    for name, data in BLOBS.items():
        await local.put(name, _one(data))
    local_url, s3_url = f"file://{tmp_path}/blobs", s3.url()

    out = _migrate(local_url, pg_url)
    total = sum(map(len, BLOBS.values()))
    assert out[-1] == f"copied 4 blobs ({total} bytes), skipped 0 already there with the same bytes"
    out = _migrate(pg_url, s3_url)
    assert out[-1].startswith("copied 4 blobs")
    pg = create_blobs(pg_url, database_url="", default_dir=tmp_path)
    bucket = create_blobs(s3_url, database_url="", default_dir=tmp_path)
    await pg.open()
    try:
        assert await _contents(pg) == BLOBS
        assert await _contents(bucket) == BLOBS
        name = "t-b/files/ds-1/big.jsonl"
        want = (len(BLOBS[name]), hashlib.sha256(BLOBS[name]).digest())
        assert await digest(pg, name) == await digest(bucket, name) == want

        # run again: nothing to copy
        assert _migrate(pg_url, s3_url)[-1] == (
            "copied 0 blobs (0 bytes), skipped 4 already there with the same bytes"
        )
        # as after an interruption: one copy missing, one with other bytes of the same size
        await bucket.delete("t-a/files/file-1/content")
        await bucket.put("t-b/outputs/b-1/.hidden..name", _one(b"ODD"))
        out = _migrate(pg_url, s3_url)
        assert out[-1] == "copied 2 blobs (43 bytes), skipped 2 already there with the same bytes"
        assert sorted(line.split()[1] for line in out if line.startswith("copied t-")) == [
            "t-a/files/file-1/content",
            "t-b/outputs/b-1/.hidden..name",
        ]
        assert await _contents(bucket) == BLOBS
    finally:
        await pg.close()
