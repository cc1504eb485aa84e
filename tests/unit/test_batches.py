"""BatchService, the batch runner and the worker together, on the fakes.

These pin the batch engine's promises independent of any dialect's HTTP shape:
exactly-once output after interrupted steps, validation with line numbers,
cancel, expiry, per-row errors, and round-robin sharing between batches.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from inferq.api.openai.batch_format import OpenAIBatchFormat
from inferq.blobs import MemoryBlobs
from inferq.core import batch_format, batch_validation
from inferq.core import batches as batches_module
from inferq.core.batch_format import row_id
from inferq.core.batches import BatchLimits, BatchService
from inferq.core.errors import InvalidRequest
from inferq.core.events import JobEvents
from inferq.core.files import FileService, LineCounter, blob_key
from inferq.core.models import Batch
from inferq.core.ports import ClaimOrder, RowFilter
from inferq.core.states import JobState, ServiceClass
from inferq.engines.base import ModelSpec
from inferq.engines.fake import FAIL_TRIGGER
from inferq.engines.registry import ModelRegistry
from inferq.runner.batches import BatchRunner
from inferq.runner.worker import Worker
from inferq.store.memory import MemoryStore

TENANT = "t1"


@dataclass
class Rig:
    store: MemoryStore
    blobs: MemoryBlobs
    files: FileService
    batches: BatchService
    runner: BatchRunner
    events: JobEvents
    registry: ModelRegistry
    worker: Worker

    async def upload(self, lines: Iterable[str | dict[str, Any]], tenant: str = TENANT) -> str:
        text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)

        async def chunks() -> AsyncIterator[bytes]:
            yield text.encode()

        record = await self.files.upload(
            tenant=tenant, purpose="batch", filename="input.jsonl", chunks=chunks()
        )
        return record.id

    async def create(self, file_id: str, batch_id: str = "b1", **changes: Any) -> Batch:
        batch = Batch(
            id=batch_id,
            tenant=TENANT,
            dialect="openai",
            model=None,
            endpoint="/v1/chat/completions",
            state=JobState.VALIDATING,
            input_file_id=file_id,
            created_at=changes.pop("created_at", 0.0),
            expires_at=changes.pop("expires_at", 1e12),
            **changes,
        )
        stored, _ = await self.batches.create(batch)
        return stored

    async def settle(self, batch_id: str = "b1", timeout: float = 10.0) -> Batch:
        """Run the batch runner until the batch ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self.runner.turn()
            batch = await self.batches.get(batch_id, tenant=TENANT)
            if batch.state.terminal:
                return batch
            await asyncio.sleep(0.01)
        raise AssertionError(f"batch {batch_id} did not end: {batch}")

    async def output(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        data = b"".join([c async for c in self.blobs.read(blob_key(TENANT, file_id))])
        return [json.loads(line) for line in data.splitlines()]


def row(n: int, text: str | None = None, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": f"r{n}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "fake",
            "messages": [{"role": "user", "content": text or f"row {n}"}],
            "max_tokens": 4,
            **body,
        },
    }


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    store, blobs, events = MemoryStore(), MemoryBlobs(), JobEvents()
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
    runner = BatchRunner(batches=service, owner="runner-1")
    worker = Worker(store=store, registry=registry, events=events)
    await worker.start()
    try:
        files = FileService(store=store, blobs=blobs)
        yield Rig(store, blobs, files, service, runner, events, registry, worker)
    finally:
        await worker.stop()
        await registry.close()


async def test_batch_runs_every_row_once_and_splits_errors(rig: Rig) -> None:
    file_id = await rig.upload([row(1), row(2, FAIL_TRIGGER), row(3, "x " * 80), row(4)])
    await rig.create(file_id)
    batch = await rig.settle()
    assert batch.state is JobState.SUCCEEDED
    assert batch.counts is not None
    assert (batch.counts.total, batch.counts.succeeded, batch.counts.failed) == (4, 2, 2)
    out = await rig.output(batch.output_file_id)
    errors = await rig.output(batch.error_file_id)
    assert [line["custom_id"] for line in out] == ["r1", "r4"]
    assert out[0]["response"]["status_code"] == 200
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == "echo: row 1"
    by_id = {line["custom_id"]: line for line in errors}
    assert set(by_id) == {"r2", "r3"}
    # retried, then given up: a server error response, as OpenAI reports one
    assert by_id["r2"]["response"]["status_code"] == 500
    assert by_id["r2"]["response"]["body"]["error"]["code"] == "engine_error"
    assert by_id["r3"]["response"]["status_code"] == 400  # the prompt does not fit
    assert by_id["r3"]["response"]["body"]["error"]["code"] == "context_length_exceeded"


async def test_interrupted_validation_and_finalization_are_redone_exactly(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches_module, "CHUNK", 3)
    monkeypatch.setattr(batch_validation, "CHUNK", 3)
    file_id = await rig.upload([row(n) for n in range(1, 11)])
    batch = await rig.create(file_id)

    async def lost() -> bool:
        return False

    # the lease is lost after the first chunk: the step stops half-way
    await rig.batches.step(batch, renew=lost)
    partial = await rig.store.batch_counts(tenant=TENANT, batch_id="b1")
    assert partial.total == 3
    assert (await rig.batches.get("b1", tenant=TENANT)).state is JobState.VALIDATING
    claimable = await rig.store.claim(ClaimOrder(owner="x", limit=10, lease_seconds=1), now=0.0)
    assert claimable == []  # unvalidated rows are never handed out

    async def held() -> bool:
        return True

    # one step at a time (a runner's turn would go on through finalizing at once)
    while (batch := await rig.batches.get("b1", tenant=TENANT)).state is not JobState.FINALIZING:
        await rig.batches.step(batch, renew=held)
        await asyncio.sleep(0.01)
    # the lease is lost while the result files are written: nothing is published
    await rig.batches.step(batch, renew=lost)
    batch = await rig.batches.get("b1", tenant=TENANT)
    assert batch.state is JobState.FINALIZING
    assert batch.output_file_id is None and rig.blobs.blobs.keys() == {blob_key(TENANT, file_id)}
    batch = await rig.settle()
    assert batch.state is JobState.SUCCEEDED
    out = await rig.output(batch.output_file_id)
    assert [line["custom_id"] for line in out] == [f"r{n}" for n in range(1, 11)]


async def test_validation_failures_name_the_line(rig: Rig) -> None:
    bad = [
        row(1),
        "not json",
        json.dumps([1, 2]),
        json.dumps({**row(4), "custom_id": ""}),
        json.dumps({**row(5), "url": "/v1/completions"}),
        json.dumps(row(6, model="nope")),
        json.dumps(row(7, temperature=9)),
    ]
    batch = await rig.create(await rig.upload(bad))
    batch = await rig.settle()
    assert batch.state is JobState.FAILED
    assert batch.errors is not None
    assert [e["line"] for e in batch.errors] == [2, 3, 4, 5, 6, 7]
    assert "not valid JSON" in batch.errors[0]["message"]
    assert batch.errors[3]["param"] == "url"
    assert "nope" in batch.errors[4]["message"]
    assert batch.errors[5]["param"] == "body.temperature"
    assert batch.error is not None and batch.error.message.startswith("input.jsonl:2:")
    # nothing of a failed batch is ever run
    counts = await rig.store.batch_counts(tenant=TENANT, batch_id="b1")
    assert counts.succeeded == 0


async def test_duplicate_custom_ids_and_empty_files_fail(rig: Rig) -> None:
    await rig.create(await rig.upload([row(1), row(2), {**row(3), "custom_id": "r1"}]))
    batch = await rig.settle()
    assert batch.state is JobState.FAILED
    assert batch.errors and batch.errors[0]["code"] == "duplicate_custom_id"
    assert batch.errors[0]["line"] == 3

    await rig.create(await rig.upload(["", "  "]), batch_id="b2")
    empty = await rig.settle("b2")
    assert empty.state is JobState.FAILED
    assert empty.errors and empty.errors[0]["code"] == "empty_file"


async def test_too_many_rows_and_open_batches(rig: Rig) -> None:
    # counted at upload: refused at once
    big = await rig.upload([row(n) for n in range(1, 52)] + ["", "   "])
    with pytest.raises(InvalidRequest, match="holds 51 requests"):
        await rig.create(big)
    # not counted (an older upload): the validation stops at the limit
    record = await rig.store.get_file(big, tenant=TENANT)
    assert record is not None and record.meta == {"lines": 51}
    await rig.store.update_file(record.evolve(meta={}))
    await rig.create(big)
    batch = await rig.settle()
    assert batch.state is JobState.FAILED
    assert batch.errors and "more than 50" in batch.errors[0]["message"]

    file_id = await rig.upload([row(1)])
    for n in range(3):
        await rig.create(file_id, batch_id=f"open{n}")
    with pytest.raises(Exception, match="too many open batches"):
        await rig.create(file_id, batch_id="one-too-many")


async def test_cancel_keeps_what_finished(rig: Rig) -> None:
    engine = rig.registry.get("fake")
    engine.token_delay = 0.05  # type: ignore[attr-defined]
    await rig.create(await rig.upload([row(n) for n in range(1, 21)]))
    await rig.runner.turn()  # validated and released
    await asyncio.sleep(0.3)
    cancelling = await rig.batches.cancel("b1", tenant=TENANT)
    assert cancelling.state is JobState.CANCELLING
    batch = await rig.settle()
    assert batch.state is JobState.CANCELLED
    out = await rig.output(batch.output_file_id)
    errors = await rig.output(batch.error_file_id)
    assert 0 < len(out) < 20
    assert len(out) + len(errors) == 20
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    assert len({line["custom_id"] for line in out + errors}) == 20


async def test_expiry_keeps_what_finished(rig: Rig) -> None:
    engine = rig.registry.get("fake")
    engine.token_delay = 0.05  # type: ignore[attr-defined]
    await rig.create(await rig.upload([row(n) for n in range(1, 21)]), expires_at=0.0)
    batch = await rig.settle()
    assert batch.state is JobState.EXPIRED
    errors = await rig.output(batch.error_file_id)
    assert errors and errors[0]["error"]["code"] == "batch_expired"


async def test_rows_of_two_batches_are_claimed_round_robin(rig: Rig) -> None:
    await rig.worker.stop()  # claim by hand
    await rig.create(await rig.upload([row(n) for n in range(1, 6)]), batch_id="first")
    await rig.create(await rig.upload([row(n) for n in range(1, 6)]), batch_id="second")
    await rig.runner.turn()
    claimed = await rig.store.claim(ClaimOrder(owner="w", limit=4, lease_seconds=60), now=0.0)
    assert all(job.service_class is ServiceClass.BATCH for job in claimed)
    order = [(job.batch_id, job.batch_line) for job in claimed]
    assert order == [("first", 1), ("second", 1), ("first", 2), ("second", 2)]


async def test_rows_ids_are_ordered_by_batch_and_line_and_the_same_when_redone(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rig.worker.stop()  # the rows stay as validation stored them
    monkeypatch.setattr(batch_validation, "CHUNK", 3)
    first = await rig.create(await rig.upload([row(n) for n in range(1, 8)]), batch_id="first")
    second = await rig.create(
        await rig.upload([row(n) for n in range(1, 3)]), batch_id="second", created_at=1.0
    )

    async def lost() -> bool:
        return False

    await rig.batches.step(first, renew=lost)  # stops after a chunk: redone next turn
    await rig.runner.turn()
    ids = {}
    for batch in (first, second):
        stored = await rig.store.batch_rows(
            RowFilter(tenant=TENANT, batch_id=batch.id, after_line=0, limit=100)
        )
        ids[batch.id] = [r.id for r in stored]
        assert [r.batch_line for r in stored] == list(range(1, len(stored) + 1))
        assert ids[batch.id] == [row_id(batch, n) for n in range(1, len(stored) + 1)]
    assert len(ids["first"]) == 7 and len(ids["second"]) == 2
    every = ids["first"] + ids["second"]
    assert every == sorted(every)  # one batch after the other, each in line order
    assert {uuid.UUID(i).version for i in every} == {8}


async def test_a_batch_stored_before_ordered_row_ids_keeps_its_rows_ids(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose validation began before an upgrade: its stored rows keep their
    name-based ids, and validating it again adds none twice."""
    await rig.worker.stop()
    monkeypatch.setattr(batch_validation, "CHUNK", 3)
    batch = await rig.create(await rig.upload([row(n) for n in range(1, 8)]), row_ids=1)

    async def lost() -> bool:
        return False

    await rig.batches.step(batch, renew=lost)
    await rig.runner.turn()
    stored = await rig.store.batch_rows(
        RowFilter(tenant=TENANT, batch_id="b1", after_line=0, limit=100)
    )
    assert [r.id for r in stored] == [
        str(uuid.uuid5(batch_format._ROW_IDS, f"{TENANT}\nb1\n{n}")) for n in range(1, 8)
    ]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
async def test_line_counter_counts_requests_across_chunk_borders(size: int) -> None:
    data = b'{"a": 1}\n\n  \n{"b": 2}\r\n{"c": 3}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    counter = LineCounter()
    passed = b"".join([c async for c in counter.count(chunks())])
    assert passed == data and counter.total == 3
