"""Retention with the clock moved forward: expired files answer 404 and are swept, old
jobs, batches and workflow jobs go with their rows, outputs and blobs, orphan blobs
older than an hour go, and nothing an open batch reads is touched. On the memory fake
with in-memory blobs, and on SQLite with a blob directory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferq.api.dialects import DIALECTS
from inferq.blobs.local import LocalBlobs
from inferq.blobs.memory import MemoryBlobs
from inferq.core.errors import InvalidRequest, NotFound
from inferq.core.files import FileService, blob_key
from inferq.core.models import Batch, FileRecord
from inferq.core.ports import BlobStore, ClaimOrder, Ending, RowFilter, tenant_prefix
from inferq.core.retention import (
    DAY,
    RetentionLimits,
    RetentionService,
    expires_after,
    output_expiry,
    with_output_expiry,
)
from inferq.core.states import JobState
from inferq.store.base import JobStore
from inferq.store.memory import MemoryStore
from inferq.store.sqlite import SQLiteStore
from tests.contract.test_store_contract import make_batch, make_job
from tests.contract.test_webhook_store_contract import a_file

T = "t1"


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture(params=["memory", "sqlite"])
async def parts(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[JobStore, BlobStore]]:
    if request.param == "memory":
        store: JobStore = MemoryStore()
        blobs: BlobStore = MemoryBlobs()
    else:
        store, blobs = SQLiteStore(tmp_path / "db.sqlite"), LocalBlobs(tmp_path / "blobs")
    await store.open()
    yield store, blobs
    await store.close()


async def test_retention_with_the_clock_moved_forward(
    parts: tuple[JobStore, BlobStore],
) -> None:
    store, blobs = parts
    start = time.time()
    now = [start]
    files = FileService(store=store, blobs=blobs, clock=lambda: now[0])
    retention = RetentionService(
        store=store,
        blobs=blobs,
        formats=DIALECTS.plugins().batch_formats,
        limits=RetentionLimits(days=30, chunk=2),
        clock=lambda: now[0],
    )

    async def upload(expiry: int | None) -> str:
        record = await files.upload(
            tenant=T, purpose="batch", filename="in.jsonl", chunks=chunks(b"{}\n")
        )
        if expiry is not None:
            record = await files.expire_after(record, expiry)
        return record.id

    expiring, read_by_open, forever = await upload(3600), await upload(3600), await upload(None)
    open_batch, _ = await store.insert_batch(make_batch().evolve(input_file_id=read_by_open))
    done = await finished_batch(store, blobs, now[0])
    workflow, _ = await store.insert_batch(make_batch(dialect="unstructured"))
    workflow_blob = f"{tenant_prefix(T)}/workflows/{workflow.id}/f1/input"
    await blobs.put(workflow_blob, chunks(b"doc"))
    assert await store.update_batch(
        workflow.evolve(state=JobState.FAILED, finished_at=now[0]), expect=workflow.state
    )
    old_job = await store.insert_job(make_job())
    await store.finish(old_job.id, Ending(JobState.CANCELLED), tenant=T, now=now[0])
    running = await store.insert_job(make_job(model="busy"))
    await store.claim(
        ClaimOrder(owner="w", limit=1, lease_seconds=3600, models={"busy"}), now=now[0]
    )
    orphan = blob_key(T, "file-orphan")  # bytes whose record was never written
    await blobs.put(orphan, chunks(b"lost"))

    # now: nothing has expired, and the orphan may be an upload on its way
    swept = await retention.sweep()
    assert swept.total == 0
    assert await blobs.size(orphan) == 4

    now[0] = start + 3601
    for gone in (expiring, read_by_open):
        with pytest.raises(NotFound):  # expired files answer 404 at once
            await files.get(gone, tenant=T)
    listed = {r.id for r in await files.list(tenant=T)}
    assert expiring not in listed and forever in listed
    swept = await retention.sweep()
    assert (swept.files, swept.orphans) == (1, 1)
    assert await store.get_file(expiring, tenant=T) is None
    assert await blobs.size(blob_key(T, expiring)) is None
    # the open batch still reads its input: record and bytes are kept
    assert await store.get_file(read_by_open, tenant=T) is not None
    assert await blobs.size(blob_key(T, read_by_open)) == 3
    assert await blobs.size(orphan) is None

    now[0] = start + 31 * DAY
    swept = await retention.sweep()
    assert (swept.jobs, swept.batches) == (1, 2)
    assert await store.get_job(old_job.id, tenant=None) is None
    assert await store.get_job(running.id, tenant=None) is not None
    assert await store.get_batch(done.id, tenant=None) is None
    assert (
        await store.batch_rows(RowFilter(tenant=T, batch_id=done.id, after_line=0, limit=10)) == []
    )
    assert done.output_file_id is not None
    assert await store.get_file(done.output_file_id, tenant=T) is None
    assert await blobs.size(blob_key(T, done.output_file_id)) is None
    assert await store.get_batch(workflow.id, tenant=None) is None
    assert await blobs.size(workflow_blob) is None
    assert await store.get_batch(open_batch.id, tenant=None) is not None
    assert await store.get_file(forever, tenant=T) is not None
    assert (await retention.sweep()).total == 0


async def finished_batch(store: JobStore, blobs: BlobStore, now: float) -> Batch:
    """An OpenAI batch that ended ``now``, with five rows and its output file."""
    batch, _ = await store.insert_batch(make_batch())
    rows = [make_job().evolve(batch_id=batch.id, custom_id=f"r{i}", batch_line=i) for i in range(5)]
    await store.insert_rows(rows)
    output, _ = DIALECTS.plugins().batch_formats["openai"].output_files(batch)
    await blobs.put(blob_key(T, output.record_id), chunks(b"out\n"))
    record = FileRecord(
        id=output.record_id, tenant=T, kind="file", purpose="batch_output",
        filename="out.jsonl", bytes=4, created_at=now,
    )  # fmt: skip
    assert await store.insert_file(record) is not None
    ended = batch.evolve(state=JobState.SUCCEEDED, finished_at=now, output_file_id=record.id)
    assert await store.update_batch(ended, expect=batch.state)
    return ended


def test_expires_after_is_checked_as_openai_does() -> None:
    assert expires_after({"anchor": "created_at", "seconds": 3600}, param="p") == 3600
    assert expires_after({"anchor": "created_at", "seconds": "86400"}, param="p") == 86400
    for bad in (
        {"anchor": "last_active_at", "seconds": 3600},
        {"anchor": "created_at", "seconds": 60},
        {"anchor": "created_at", "seconds": 2592001},
        {"anchor": "created_at", "seconds": True},
        "3600",
    ):
        with pytest.raises(InvalidRequest):
            expires_after(bad, param="p")


def test_a_batch_output_expires_after_its_creation() -> None:
    batch = make_batch().evolve(meta=output_expiry({"anchor": "created_at", "seconds": 7200}))
    record = a_file("file-out", expires_at=None)
    [out] = with_output_expiry(batch, [record])
    assert out.meta["expires_at"] == batch.created_at + 7200
    assert with_output_expiry(make_batch(), [record]) == [record]
    assert output_expiry(None) == {}
