"""One bad document job never stops the workflow runner.

A node id that cannot name a blob is refused at submission with Unstructured's 422;
a record holding one anyway (it reached the store some other way) fails at once,
naming the node, while another job completes; a run that keeps raising is logged
once, backed off and in the end failed; and one tenant's backlog of scheduled jobs
never keeps another tenant's job from starting. The runner tests run on every store
(memory, SQLite, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from inferq import documents
from inferq.api.unstructured.catalogue import CATALOGUE
from inferq.blobs import MemoryBlobs
from inferq.core.events import JobEvents
from inferq.core.models import Batch
from inferq.core.service import JobService
from inferq.core.states import JobState
from inferq.core.workflows import InputFile, WorkflowService
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.runner.retry import RetryPolicy
from inferq.runner.workflows import WorkflowRunner, executor_of
from inferq.store.base import JobStore
from inferq.store.memory import MemoryStore
from inferq.store.sqlite import SQLiteStore
from tests import documents_samples as samples
from tests.support.postgres import postgres_store
from tests.unit.test_workflows import JOBS, create, make_client, post_job, wait

# -- at submission ----------------------------------------------------------------------

#: node ids that cannot be part of a blob key
BAD_IDS = {
    "parent folder": "../x",
    "NUL": "a\x00b",
    "not ASCII": "nœud",
    "300 characters": "x" * 300,
    "a slash": "a/b",
    "two dots": "a..b",
    "leading dot": ".hidden",
}


def nodes(partition_id: str | None = None, chunk_id: str | None = None) -> list[dict[str, Any]]:
    partition: dict[str, Any] = {"name": "P", "type": "partition", "subtype": "unstructured_api"}
    chunk: dict[str, Any] = {"name": "C", "type": "chunk", "subtype": "chunk_by_title"}
    if partition_id is not None:
        partition["id"] = partition_id
    if chunk_id is not None:
        chunk["id"] = chunk_id
    return [partition, chunk]


def test_node_ids_that_cannot_name_a_blob_are_refused_at_submission(tmp_path: Path) -> None:
    with make_client(tmp_path) as client:
        for what, bad in BAD_IDS.items():
            response = post_job(client, {"job_nodes": nodes(chunk_id=bad)}, [samples.text_file()])
            assert response.status_code == 422, (what, response.text)
            detail = response.json()["detail"]
            assert isinstance(detail, list) and detail, (what, detail)
            assert detail[0]["loc"][-1] == "id", (what, detail)
            message = detail[0]["msg"]
            assert "id" in message, (what, message)
            if what != "NUL":  # the input check may name the NUL before the id rule does
                assert ascii(bad[:40])[1:-1][:20] in message, (what, message)
                assert "not a valid node id" in message, (what, message)
        assert client.get(JOBS).json() == []  # nothing stored
        # ids of the documented shape are kept, and the job runs to its end
        good = create(
            client,
            {"job_nodes": nodes("partition-1", "chunk_by_title.v2")},
            [samples.text_file()],
        )
        assert {f["node_id"] for f in good["output_node_files"]} == {
            "partition-1",
            "chunk_by_title.v2",
        }
        done = wait(client, good["id"], {"COMPLETED"})
        assert done["status"] == "COMPLETED"
        assert [j["id"] for j in client.get(JOBS).json()] == [good["id"]]


# -- in the runner --------------------------------------------------------------------------


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


class Docs:
    """The real document layer."""

    DocumentError = documents.DocumentError

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
        return documents.partition(filename, data, settings)

    def chunk(
        self,
        elements: list[dict[str, object]],
        subtype: str,
        settings: Mapping[str, object],
        vectors: Sequence[Sequence[float]] | None = None,
    ) -> list[dict[str, object]]:
        return documents.chunk(elements, subtype, settings, vectors)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, store: JobStore, *, retry: RetryPolicy | None = None) -> None:
        self.store = store
        self.blobs = MemoryBlobs()
        self.clock = Clock()
        registry = ModelRegistry({"chat": ModelSpec(name="chat", engine="fake", slots=1)})
        docs = Docs()
        self.service = WorkflowService(
            store=store,
            blobs=self.blobs,
            models=registry,
            documents=docs,
            catalogue=CATALOGUE,
            clock=self.clock,
        )
        jobs = JobService(store=store, models=registry, events=JobEvents(), clock=self.clock)
        self.executor = executor_of(self.service, jobs)
        self.runner = WorkflowRunner(
            store=store,
            executor=self.executor,
            owner="r",
            lease_seconds=30,
            interval=0.01,
            clock=self.clock,
            retry=retry,
        )

    async def job(self, tenant: str = "t") -> Batch:
        return await self.service.create(
            tenant=tenant,
            template_id=None,
            job_nodes=nodes(),
            files=[InputFile("a.txt", b"Hello there. " * 20)],
        )

    async def get(self, job: Batch) -> Batch:
        found = await self.store.get_batch(job.id, tenant=job.tenant)
        assert found is not None
        return found

    async def held(self) -> None:
        """Let the jobs this runner holds run to their end."""
        if self.runner._running:
            await asyncio.wait(list(self.runner._running.values()))


async def with_node_id(store: JobStore, job: Batch, index: int, node_id: str) -> Batch:
    """The job as a record that skipped the service's checks: one node's id replaced."""
    old = job.meta["nodes"][index]["id"]
    meta = {
        **job.meta,
        "nodes": [
            {**n, "id": node_id} if i == index else n for i, n in enumerate(job.meta["nodes"])
        ],
        "tasks": {
            f: {(node_id if k == old else k): v for k, v in t.items()}
            for f, t in job.meta["tasks"].items()
        },
    }
    changed = job.evolve(meta=meta)
    assert await store.update_batch(changed, expect=JobState.QUEUED)
    return changed


async def test_records_with_bad_node_ids_fail_naming_the_node_and_a_good_job_completes(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(store)
    bad_ids = ["../x", "nœud", "x" * 300, "a/b"]
    poisoned = [await with_node_id(store, await rig.job("evil"), 1, b) for b in bad_ids]
    good = await rig.job("good")
    await asyncio.wait_for(rig.runner.run_until_idle(), 60)

    done = await rig.get(good)
    assert done.state is JobState.SUCCEEDED
    for job, bad in zip(poisoned, bad_ids, strict=True):
        failed = await rig.get(job)
        assert failed.state is JobState.FAILED
        message = failed.meta["message"]
        assert failed.meta["processing_status"] == "FAILED"
        assert message.startswith("node 1 ('C'): "), message
        assert ascii(bad[:40])[1:-1] in message and "not a valid node id" in message
        assert failed.error is not None and failed.error.message == message
        assert all(t == "ready" for t in failed.meta["tasks"][failed.input_file_id].values())
    # failed once each, not retried: one line each, no traceback
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_run_that_keeps_raising_backs_off_then_fails_only_its_job(
    store: JobStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(store)
    bad = await rig.job("evil")
    good = await rig.job("good")
    attempts: list[float] = []
    run = rig.executor.run

    async def failing(job: Batch) -> Batch:
        if job.id == bad.id:
            attempts.append(rig.clock.now)
            raise RuntimeError("the disk is on fire")
        return await run(job)

    monkeypatch.setattr(rig.executor, "run", failing)
    await rig.runner.turn()
    await rig.held()
    assert len(attempts) == 1
    assert (await rig.get(good)).state is JobState.SUCCEEDED  # the same turn took it
    for wait_s in (1.0, 2.0, 4.0, 8.0):
        for _ in range(3):
            await rig.runner.turn()
            await rig.held()
        rig.clock.now += wait_s * 0.9
        await rig.runner.turn()
        await rig.held()
        assert len(attempts) == {1.0: 1, 2.0: 2, 4.0: 3, 8.0: 4}[wait_s]
        rig.clock.now += wait_s * 0.1 + 0.001
        await rig.runner.turn()
        await rig.held()
    assert len(attempts) == 5
    failed = await rig.get(bad)
    assert failed.state is JobState.FAILED
    assert failed.meta["processing_status"] == "FAILED"
    assert "5 unexpected errors in a row" in failed.meta["message"]
    assert "RuntimeError" in failed.meta["message"]
    rig.clock.now += 3600
    await rig.runner.turn()
    await rig.held()
    assert len(attempts) == 5
    about = [r for r in caplog.records if bad.id in r.getMessage() and r.levelno >= logging.WARNING]
    assert sum(1 for r in about if r.exc_info) == 2  # when it first failed, when it was failed
    assert len(about) == 3  # and the executor's "failed" line


async def test_a_tenants_backlog_never_keeps_another_tenants_job_waiting(
    store: JobStore,
) -> None:
    rig = Rig(store)
    first = await rig.job("busy")
    # 250 more scheduled jobs of one tenant, copies of the first (more than a page)
    for n in range(250):
        copy = first.evolve(id=f"{n:04d}-{first.id}", seq=0)
        await store.insert_batch(copy)
    other = await rig.job("quiet")
    rig.runner.concurrency = 4
    try:
        await rig.runner.turn()
        held = set(rig.runner._running)
    finally:
        await rig.runner.stop()
    assert other.id in held
    assert len(held) == 4
