"""One bad batch never stops the batch runner, on every store (memory, SQLite, PostgreSQL).

A line no store can keep fails its own batch's validation, naming the line, while
another tenant's batch runs; a step that keeps raising for one batch is logged
once, backed off and in the end fails that batch, while the others move on in the
same turns; and a backlog of document workflow jobs never hides a batch from its
runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inferq.api.openai.batch_format import OpenAIBatchFormat
from inferq.blobs import MemoryBlobs
from inferq.core.batches import BatchLimits, BatchService, ParsedRow
from inferq.core.events import JobEvents
from inferq.core.files import FileService
from inferq.core.models import Batch, Job
from inferq.core.ports import BatchFilter
from inferq.core.states import JobState
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.runner.batches import BatchRunner
from inferq.runner.retry import RetryPolicy
from inferq.runner.worker import Worker
from inferq.store.base import JobStore
from inferq.store.memory import MemoryStore
from inferq.store.sqlite import SQLiteStore
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


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    store: JobStore
    files: FileService
    batches: BatchService
    runner: BatchRunner

    async def upload(self, tenant: str, lines: Iterable[str | dict[str, Any]]) -> str:
        text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)

        async def chunks() -> AsyncIterator[bytes]:
            yield text.encode()

        record = await self.files.upload(
            tenant=tenant, purpose="batch", filename="input.jsonl", chunks=chunks()
        )
        return record.id

    async def create(self, tenant: str, batch_id: str, lines: Sequence[Any]) -> Batch:
        batch = Batch(
            id=batch_id,
            tenant=tenant,
            dialect="openai",
            model=None,
            endpoint="/v1/chat/completions",
            state=JobState.VALIDATING,
            input_file_id=await self.upload(tenant, lines),
            created_at=0.0,
            expires_at=1e12,
        )
        stored, _ = await self.batches.create(batch)
        return stored

    async def get(self, tenant: str, batch_id: str) -> Batch:
        return await self.batches.get(batch_id, tenant=tenant)

    async def ended(self, *batches: tuple[str, str], timeout: float = 20.0) -> list[Batch]:
        """Wait (the runner's loop runs) until every batch has ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = [await self.get(tenant, batch_id) for tenant, batch_id in batches]
            if all(b.state.terminal for b in now):
                return now
            states = {b.id: b.state.value for b in now}
            assert loop.time() < deadline, f"not ended after {timeout}s: {states}"
            await asyncio.sleep(0.02)


def row(n: int, content: str | None = None) -> dict[str, Any]:
    return {
        "custom_id": f"r{n}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "fake",
            "messages": [{"role": "user", "content": content or f"row {n}"}],
            "max_tokens": 4,
        },
    }


@contextlib.asynccontextmanager
async def rig(
    store: JobStore,
    *,
    clock: Clock | None = None,
    retry: RetryPolicy | None = None,
    interval: float = 0.02,
) -> AsyncIterator[Rig]:
    blobs, events = MemoryBlobs(), JobEvents()
    registry = ModelRegistry(
        {"fake": ModelSpec(name="fake", engine="fake", context_length=64, slots=2)}
    )
    await registry.start()
    service = BatchService(
        store=store,
        blobs=blobs,
        models=registry,
        events=events,
        formats={"openai": OpenAIBatchFormat()},
        limits=BatchLimits(max_rows=50, max_open=3),
    )
    runner = BatchRunner(
        batches=service,
        owner="runner-1",
        interval=interval,
        clock=clock or time.time,
        retry=retry,
    )
    worker = Worker(store=store, registry=registry, events=events)
    await worker.start()
    try:
        yield Rig(store, FileService(store=store, blobs=blobs), service, runner)
    finally:
        await runner.stop()
        await worker.stop()
        await registry.close()


#: lines no store can keep, or no parser reads without a RecursionError
POISON = {
    "nested 5000 deep": (
        '{"custom_id": "r2", "method": "POST", "url": "/v1/chat/completions", "body": '
        + "[" * 5000
        + "]" * 5000
        + "}",
        "nested more than 64 levels deep",
    ),
    "lone surrogate": (json.dumps(row(2, "\ud800")), "lone surrogate"),
    "NUL": (json.dumps(row(2, "a\u0000b")), "NUL character"),
}


@pytest.mark.parametrize("line", list(POISON.values()), ids=list(POISON))
async def test_a_poisoned_line_fails_its_batch_and_another_tenants_batch_completes(
    store: JobStore, line: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    text, problem = line
    async with rig(store) as r:
        await r.create("evil", "bad", [row(1), text, row(3)])
        await r.create("good", "ok", [row(1), row(2)])
        await r.runner.start()
        bad, good = await r.ended(("evil", "bad"), ("good", "ok"))
    assert good.state is JobState.SUCCEEDED
    assert good.counts is not None and good.counts.succeeded == 2
    assert bad.state is JobState.FAILED
    assert bad.errors is not None and [e["line"] for e in bad.errors] == [2]
    assert bad.error is not None
    assert bad.error.message.startswith("input.jsonl:2: the line")
    assert problem in bad.error.message
    # an ordinary validation failure: no traceback in the log
    assert not [rec for rec in caplog.records if rec.exc_info]


async def test_a_line_that_trips_a_bug_fails_its_batch_naming_the_line(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    class Buggy(OpenAIBatchFormat):
        def parse_row(self, data: Any, batch: Batch) -> ParsedRow:
            if data.get("custom_id") == "boom":
                raise RecursionError("maximum recursion depth exceeded")
            return super().parse_row(data, batch)

    async with rig(store) as r:
        r.batches.formats["openai"] = Buggy()
        await r.create("evil", "bad", [row(1), {**row(2), "custom_id": "boom"}, row(3)])
        await r.create("good", "ok", [row(1)])
        await r.runner.start()
        bad, good = await r.ended(("evil", "bad"), ("good", "ok"))
    assert good.state is JobState.SUCCEEDED
    assert bad.state is JobState.FAILED
    assert bad.errors is not None
    assert [(e["line"], e["code"]) for e in bad.errors] == [(2, "internal_error")]
    assert bad.error is not None and bad.error.message.startswith("input.jsonl:2: ")
    assert "RecursionError" in bad.error.message
    logged = [rec for rec in caplog.records if rec.exc_info]
    assert len(logged) == 1 and "bad" in logged[0].getMessage()


async def test_a_step_that_keeps_raising_backs_off_then_fails_only_its_batch(
    store: JobStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    attempts: list[float] = []
    insert_rows = store.insert_rows

    async def failing(rows: Sequence[Job]) -> None:
        if rows and rows[0].batch_id == "bad":
            attempts.append(clock.now)
            raise RuntimeError("the disk is on fire")
        await insert_rows(rows)

    monkeypatch.setattr(store, "insert_rows", failing)
    caplog.set_level(logging.INFO, logger="inferq")
    async with rig(store, clock=clock) as r:
        await r.create("evil", "bad", [row(1)])
        await r.create("good", "ok", [row(1)])
        # one turn: the bad batch raises, the good one (after it) is still validated
        await r.runner.turn()
        assert attempts == [clock.now]
        # (validated: the same turn may already have seen its row claimed, or ended)
        good = await r.get("good", "ok")
        assert good.state not in (JobState.VALIDATING, JobState.FAILED), good.state
        assert (await r.get("evil", "bad")).state is JobState.VALIDATING
        # backed off: not tried again before its delay, which doubles from 1 s
        for wait in (1.0, 2.0, 4.0, 8.0):
            for _ in range(3):
                await r.runner.turn()
            clock.now += wait * 0.9
            await r.runner.turn()
            assert len(attempts) == int(math.log2(wait)) + 1
            clock.now += wait * 0.1 + 0.001
            await r.runner.turn()
        # the fifth failure in a row ends it, with a message that says why
        assert len(attempts) == 5
        bad = await r.get("evil", "bad")
        assert bad.state is JobState.FAILED
        assert bad.error is not None and bad.error.code == "internal_error"
        assert "5 unexpected errors in a row" in bad.error.message
        assert "RuntimeError" in bad.error.message and "validating" in bad.error.message
        assert "fire" not in bad.error.message  # the exception's text stays in the log
        clock.now += 3600
        await r.runner.turn()
        assert len(attempts) == 5
        # the good batch goes on as if nothing happened
        await r.runner.start()
        (good,) = await r.ended(("good", "ok"))
        assert good.state is JobState.SUCCEEDED
    # one traceback when it first failed, one line when it was failed: not one per try
    about_bad = [rec for rec in caplog.records if "bad" in rec.getMessage()]
    assert [rec.levelname for rec in about_bad if rec.levelno >= logging.WARNING] == [
        "WARNING",
        "ERROR",
        "WARNING",  # BatchService: "batch bad failed: ..."
    ]
    assert sum(1 for rec in about_bad if rec.exc_info) == 2


async def test_a_backlog_of_workflow_jobs_never_hides_a_batch(store: JobStore) -> None:
    # 120 scheduled document jobs of one tenant, older than the batch: before, the runner
    # read the 100 oldest open records of any kind and never saw the batch
    for _ in range(120):
        await store.insert_batch(
            Batch(
                id=str(uuid.uuid4()),
                tenant="docs",
                dialect="unstructured",
                model=None,
                endpoint="workflow",
                state=JobState.QUEUED,
                input_file_id="f",
                created_at=0.0,
                expires_at=1e12,
                meta={"nodes": [], "files": [], "tasks": {}},
            )
        )
    async with rig(store) as r:
        await r.create("t1", "b1", [row(1), row(2)])
        await r.runner.start()
        (batch,) = await r.ended(("t1", "b1"))
    assert batch.state is JobState.SUCCEEDED
    assert batch.counts is not None and batch.counts.succeeded == 2
    # the workflow jobs are the workflow runner's: untouched
    left = await store.list_batches(
        BatchFilter(
            tenant="docs", dialect="unstructured", limit=200, states=frozenset({JobState.QUEUED})
        )
    )
    assert len(left) == 120
