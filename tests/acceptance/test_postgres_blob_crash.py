"""``kill -9`` while bytes are being written to the PostgreSQL blob store.

1. During an upload: a Fireworks signed PUT streams a dataset file slowly into the
   blob store (straight from the socket, a chunk row at a time); the server is killed
   once chunk rows are in the database. Nothing of it is visible afterwards (no blob name,
   no file in the dataset), the abandoned chunks are swept, and the same upload succeeds
   after a restart.
2. During a batch's result writing: the server is killed while the batch is
   ``finalizing`` and its output file's chunk rows are being written. Nothing
   half-written is visible (no output file, no published blob); after a restart the
   batch completes and its output holds every row exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from inferq.blobs.postgres import PostgresBlobs
from tests.acceptance.cluster import connect, fresh_schema, schema_url
from tests.support.server import Server, fake_models_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCOUNT = "acme"
#: rows of the batch, and words of each prompt (the fake engine echoes them, one word a
#: token, within its context of 512: ~1.3 KB a row, so the output file is several 1 MiB
#: chunk rows and takes a while to write)
ROWS = 3000
WORDS = 200
#: chunk rows already written, outside any published blob, that say "mid-write"
PENDING_CHUNKS = "SELECT count(*) FROM blob_chunks c JOIN blob_uploads u ON u.id = c.upload_id"


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    async with fresh_schema() as name:
        yield name


@pytest.fixture
def server(tmp_path: Path, schema: str) -> Iterator[Server]:
    env = {"INFERQ_DATABASE_URL": schema_url(schema), "INFERQ_LEASE_SECONDS": "2"}
    srv = Server(
        tmp_path / "data",
        models_file=fake_models_file(tmp_path / "models.toml", slots=8),
        env=env,
    )
    srv.start()
    yield srv
    srv.stop()


async def _wait_for(conn: asyncpg.Connection, query: str, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await conn.fetchval(query):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout}s", pytrace=False)
        await asyncio.sleep(0.005)


async def test_kill_9_during_an_upload(server: Server, schema: str) -> None:
    key = server.create_key("upload")
    headers = {"Authorization": f"Bearer {key}"}
    base = f"{server.url}/v1/accounts/{ACCOUNT}/datasets"
    size = 40 << 20
    with httpx.Client(headers=headers, timeout=30) as client:
        made = client.post(
            base,
            json={"datasetId": "big", "dataset": {"exampleCount": "1", "userUploaded": {}}},
        )
        assert made.status_code == 200, made.text
        endpoint = client.post(
            f"{base}/big:getUploadEndpoint", json={"filenameToSize": {"big.jsonl": str(size)}}
        )
        assert endpoint.status_code == 200, endpoint.text
    url = endpoint.json()["filenameToSignedUrls"]["big.jsonl"]

    def slowly() -> Iterator[bytes]:
        for _ in range(size >> 16):
            yield b"x" * (1 << 16)
            time.sleep(0.002)  # ~30 MB/s at most: the kill lands mid-stream

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under it
            httpx.put(url, content=slowly(), timeout=60)

    uploader = threading.Thread(target=upload)
    uploader.start()
    conn = await connect(schema)
    try:
        await _wait_for(conn, f"{PENDING_CHUNKS} HAVING count(*) >= 3", "chunk rows", 60)
        server.kill()
        uploader.join(timeout=60)
        # nothing half-written is visible: no name points at the bytes
        assert await conn.fetchval("SELECT count(*) FROM blobs") == 0
        assert await conn.fetchval(PENDING_CHUNKS) >= 3
        # the sweep (after its grace; none here) deletes the abandoned chunks
        blobs = PostgresBlobs(schema_url(schema), grace=0)
        await blobs.open()
        await blobs.close()
        assert await conn.fetchval("SELECT count(*) FROM blob_chunks") == 0
        assert await conn.fetchval("SELECT count(*) FROM blob_uploads") == 0
    finally:
        await conn.close()
    server.start()
    with httpx.Client(headers=headers, timeout=30) as client:
        # the dataset has no file: its validation says so
        pending = client.post(f"{base}/big:validateUpload", json={})
        assert pending.status_code == 400, pending.text
        again = httpx.put(url, content=b"y" * size, timeout=60)
        assert again.status_code == 200, again.text
        assert client.post(f"{base}/big:validateUpload", json={}).status_code == 200
        urls = client.get(f"{base}/big:getDownloadEndpoint").json()["filenameToSignedUrls"]
        got = httpx.get(urls["dataset/big/big.jsonl"], headers={"Range": "bytes=-4"})
        assert got.status_code == 206 and got.content == b"yyyy"


def _line(i: int) -> dict[str, Any]:
    text = f"row {i} " + " ".join(f"w{k}" for k in range(WORDS))
    return {
        "custom_id": f"row-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "fake",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": WORDS + 10,
        },
    }


async def test_kill_9_while_a_batch_writes_its_results(server: Server, schema: str) -> None:
    key = server.create_key("batch")
    body = "".join(json.dumps(_line(i)) + "\n" for i in range(ROWS)).encode()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        uploaded = client.post(
            "/v1/files",
            files={"file": ("input.jsonl", body, "application/jsonl")},
            data={"purpose": "batch"},
        )
        assert uploaded.status_code == 200, uploaded.text
        created = client.post(
            "/v1/batches",
            json={
                "input_file_id": uploaded.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        assert created.status_code == 200, created.text
    batch_id = created.json()["id"]
    conn = await connect(schema)
    try:
        finalizing = f"SELECT state = 'finalizing' FROM batches WHERE id = '{batch_id}'"
        await _wait_for(conn, finalizing, "the batch finalizing", 240)
        await _wait_for(conn, f"{PENDING_CHUNKS} HAVING count(*) >= 1", "output chunks", 30)
        server.kill()
        # nothing half-written is visible: the batch has no output file, no output blob
        assert await conn.fetchval(finalizing)
        assert await conn.fetchval("SELECT count(*) FROM files") == 1  # the input
        assert await conn.fetchval("SELECT count(*) FROM blobs") == 1
    finally:
        await conn.close()

    server.start()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        deadline = time.monotonic() + 120
        while (batch := client.get(f"/v1/batches/{batch_id}").json())["status"] != "completed":
            assert batch["status"] not in ("failed", "expired", "cancelled"), batch
            assert time.monotonic() < deadline, f"the batch did not complete: {batch}"
            time.sleep(0.2)
        assert batch["request_counts"] == {"total": ROWS, "completed": ROWS, "failed": 0}
        output = client.get(f"/v1/files/{batch['output_file_id']}/content")
        assert output.status_code == 200
    seen = Counter(json.loads(line)["custom_id"] for line in output.text.splitlines())
    assert set(seen) == {f"row-{i}" for i in range(ROWS)}
    assert max(seen.values()) == 1, seen.most_common(3)
