"""The workflow executor and runner on every store (memory, SQLite, PostgreSQL): resuming
after a crash keeps finished outputs and redoes only unfinished tasks; leases keep two
runners apart; the per-tenant running limit holds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from inferq import documents
from inferq.api.unstructured.catalogue import CATALOGUE
from inferq.blobs import MemoryBlobs
from inferq.core.events import JobEvents
from inferq.core.service import JobService
from inferq.core.states import JobState
from inferq.core.workflow_meta import IN_PROGRESS, READY, SUCCESS, nodes_of, output_key
from inferq.core.workflow_run import WorkflowExecutor
from inferq.core.workflows import InputFile, WorkflowService
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.runner.workflows import WorkflowRunner
from inferq.store.base import JobStore
from inferq.store.memory import MemoryStore
from inferq.store.sqlite import SQLiteStore
from tests import documents_samples as samples
from tests.support.postgres import postgres_store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "postgres":
        async with postgres_store() as pg:
            yield pg
        return
    the_store: JobStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "jobs.db")
    )
    await the_store.open()
    yield the_store
    await the_store.close()


class CountingDocuments:
    """The real document layer, counting the calls of each function."""

    DocumentError = documents.DocumentError

    def __init__(self) -> None:
        self.calls: dict[str, int] = {"partition": 0, "chunk": 0}

    def check_document(self, filename: str, data: bytes) -> str:
        return documents.check_document(filename, data)

    def check_partition_settings(
        self, subtype: str, settings: Mapping[str, object]
    ) -> dict[str, object]:
        return documents.check_partition_settings(subtype, settings)

    def check_chunk_settings(
        self, subtype: str, settings: Mapping[str, object]
    ) -> dict[str, object]:
        return documents.check_chunk_settings(subtype, settings)

    def partition(
        self, filename: str, data: bytes, settings: Mapping[str, object]
    ) -> list[dict[str, object]]:
        self.calls["partition"] += 1
        return documents.partition(filename, data, settings)

    def chunk(
        self,
        elements: list[dict[str, object]],
        subtype: str,
        settings: Mapping[str, object],
        vectors: Sequence[Sequence[float]] | None = None,
    ) -> list[dict[str, object]]:
        self.calls["chunk"] += 1
        return documents.chunk(elements, subtype, settings, vectors)


NODES: list[dict[str, Any]] = [
    {"name": "P", "type": "partition", "subtype": "unstructured_api"},
    {"name": "C", "type": "chunk", "subtype": "chunk_by_title",
     "settings": {"max_characters": 200}},
]  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def parts(
    store: JobStore,
) -> tuple[JobStore, MemoryBlobs, CountingDocuments, WorkflowService, Clock]:
    blobs, docs, clock = MemoryBlobs(), CountingDocuments(), Clock()
    registry = ModelRegistry({"chat": ModelSpec(name="chat", engine="fake", slots=1)})
    service = WorkflowService(
        store=store, blobs=blobs, models=registry, documents=docs, catalogue=CATALOGUE, clock=clock
    )
    return store, blobs, docs, service, clock


def runner(store: JobStore, blobs: MemoryBlobs, docs: CountingDocuments, owner: str,
           clock: Clock) -> WorkflowRunner:  # fmt: skip
    registry = ModelRegistry({"chat": ModelSpec(name="chat", engine="fake", slots=1)})
    jobs = JobService(store=store, models=registry, events=JobEvents(), clock=clock)
    executor = WorkflowExecutor(
        store=store, blobs=blobs, jobs=jobs, documents=docs, catalogue=CATALOGUE, clock=clock
    )
    return WorkflowRunner(
        store=store, executor=executor, owner=owner, lease_seconds=30, interval=0.01, clock=clock
    )


async def test_a_job_taken_over_after_a_crash_keeps_finished_outputs(store: JobStore) -> None:
    store, blobs, docs, service, clock = parts(store)
    name, data = samples.html_file()
    job = await service.create(
        tenant="t", template_id=None, job_nodes=NODES,
        files=[InputFile(name, data), InputFile("b.txt", b"Hello there. " * 30)],
    )  # fmt: skip
    partition, chunk = nodes_of(job)
    first, second = (f["id"] for f in job.meta["files"])
    # what a runner that died left: the first file done, the second partitioned and in
    # the middle of chunking, its lease (owner "dead") still running for 30 s
    elements = documents.partition(name, data, {})
    for file_id in (first, second):
        key = output_key("t", job.id, file_id, partition.id)
        await blobs.put(key, _chunks(json.dumps(elements).encode()))
    await blobs.put(output_key("t", job.id, first, chunk.id), _chunks(b"[]"))
    tasks = {first: {partition.id: SUCCESS, chunk.id: SUCCESS},
             second: {partition.id: SUCCESS, chunk.id: IN_PROGRESS}}  # fmt: skip
    running = job.evolve(
        state=JobState.RUNNING, started_at=clock.now, meta={**job.meta, "tasks": tasks}
    )
    assert await store.update_batch(running, expect=JobState.QUEUED)
    assert await store.lease_batch(running, owner="dead", now=clock.now, until=clock.now + 30)

    other = runner(store, blobs, docs, "other", clock)
    assert await other.turn() == 0  # the dead runner's lease still holds
    clock.now += 31
    await other.run_until_idle()

    done = await store.get_batch(job.id, tenant="t")
    assert done is not None and done.state is JobState.SUCCEEDED
    assert done.meta["tasks"][second] == {partition.id: SUCCESS, chunk.id: SUCCESS}
    assert docs.calls == {"partition": 0, "chunk": 1}  # only the unfinished task ran
    assert blobs.blobs[output_key("t", job.id, first, chunk.id)] == b"[]"  # kept as it was
    chunks = json.loads(blobs.blobs[output_key("t", job.id, second, chunk.id)])
    assert chunks and all(len(c["text"]) <= 200 for c in chunks)


async def test_scheduled_jobs_wait_for_the_tenants_running_limit(store: JobStore) -> None:
    store, blobs, docs, service, clock = parts(store)
    files = [InputFile(*samples.text_file())]
    jobs = [
        await service.create(tenant="t", template_id="fast_partition", job_nodes=None, files=files)
        for _ in range(3)
    ]
    other_tenant = await service.create(
        tenant="u", template_id="fast_partition", job_nodes=None, files=files
    )
    # two of tenant t's jobs are running elsewhere
    for job in jobs[:2]:
        started = job.evolve(state=JobState.RUNNING)
        assert await store.update_batch(started, expect=JobState.QUEUED)
        assert await store.lease_batch(job, owner="x", now=clock.now, until=clock.now + 60)
    limited = runner(store, blobs, docs, "r", clock)
    limited.max_running = 2
    await limited.turn()
    assert set(limited._running) == {other_tenant.id}  # t is at its limit
    await limited.stop()


async def test_cancelling_a_scheduled_job_stops_it_at_once(store: JobStore) -> None:
    store, _, _, service, _ = parts(store)
    job = await service.create(
        tenant="t", template_id="fast_partition", job_nodes=None,
        files=[InputFile(*samples.text_file())],
    )  # fmt: skip
    stopped = await service.cancel(job.id, tenant="t")
    assert stopped.state is JobState.CANCELLED
    assert stopped.meta["processing_status"] == "STOPPED"
    assert all(t == READY for t in stopped.meta["tasks"][job.input_file_id].values())
    with pytest.raises(Exception, match="already ended"):
        await service.cancel(job.id, tenant="t")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
