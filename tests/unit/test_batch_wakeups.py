"""A batch's steps follow the events that make them possible, on every store.

The runner's turn every ``interval`` is only a fallback: with an interval of a minute,
a batch is still validated the moment it is created and finalized the moment its last
row ends, in this process or (PostgreSQL) in another; and with every wake-up lost, the
turns alone still finish it, every row exactly once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from inferq.api.openai.batch_format import OpenAIBatchFormat
from inferq.blobs import MemoryBlobs
from inferq.core.batches import BatchLimits, BatchService, row_id
from inferq.core.events import JobEvents
from inferq.core.files import FileService, blob_key
from inferq.core.ids import new_uuid7
from inferq.core.models import Batch, BatchCounts
from inferq.core.states import JobState
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.runner.batches import BatchRunner
from inferq.runner.worker import Worker
from inferq.store.base import JobStore
from inferq.store.memory import MemoryStore
from inferq.store.postgres import PostgresStore
from inferq.store.sqlite import SQLiteStore
from tests.contract.test_store_contract import make_batch
from tests.support.postgres import database_url, fresh_schema, postgres_store
from tests.unit.test_batch_isolation import Rig, rig, row

#: far longer than any of these tests may take: a step that waits for a turn fails them
NO_POLL = 60.0


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


async def rows_once(r: Rig | BatchService, batch: Batch, n: int) -> None:
    """Every one of the batch's ``n`` rows succeeded and is in its output exactly once."""
    service = r.batches if isinstance(r, Rig) else r
    assert batch.state is JobState.SUCCEEDED, batch
    assert batch.counts is not None and (batch.counts.total, batch.counts.succeeded) == (n, n)
    data = b"".join(
        [c async for c in service.blobs.read(blob_key(batch.tenant, batch.output_file_id or ""))]
    )
    custom_ids = sorted(json.loads(line)["custom_id"] for line in data.splitlines())
    assert custom_ids == sorted(f"r{k}" for k in range(1, n + 1))


async def test_every_step_follows_its_event_without_waiting_for_a_turn(store: JobStore) -> None:
    async with rig(store, interval=NO_POLL) as r:
        r.batches.on_created(r.runner.wake)
        await r.runner.start()
        started = time.monotonic()
        await r.create("t1", "one", [row(1)])
        await r.create("t2", "three", [row(k) for k in (1, 2, 3)])
        one, three = await r.ended(("t1", "one"), ("t2", "three"), timeout=10.0)
        assert time.monotonic() - started < 10.0
        await rows_once(r, one, 1)
        await rows_once(r, three, 3)


async def test_only_the_last_rows_end_wakes_the_runner(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waking for every row's end cost each end a turn and a count of the batch's rows
    (a 10,000-row batch ran at half speed): the runner counts down the rows its watch
    saw active and wakes when the last has ended."""
    async with rig(store, interval=NO_POLL) as r:
        turns = 0
        turn = r.runner.turn

        async def counted() -> int:
            nonlocal turns
            turns += 1
            return await turn()

        monkeypatch.setattr(r.runner, "turn", counted)
        r.batches.on_created(r.runner.wake)
        await r.runner.start()
        await r.create("t1", "many", [row(k) for k in range(1, 31)])
        (many,) = await r.ended(("t1", "many"), timeout=10.0)
        await rows_once(r, many, 30)
        # created (validated and watched), perhaps a turn an end woke before the first
        # count, the last row's end (finalized); not one a row
        assert turns <= 5, turns


async def test_ends_told_while_the_rows_are_counted_wake_nothing_and_count_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An end told while a watch counts the batch's rows (a 20,000-row batch's count
    takes milliseconds, and rows end meanwhile) woke the runner, whose next turn counted
    again at once: 50 counts a second slowed every row. Such ends now wake nothing and
    are taken off the count, so the runner still wakes at the last row's end."""
    async with rig(MemoryStore(), interval=NO_POLL) as r:
        wakes: list[int] = []
        monkeypatch.setattr(r.runner, "wake", lambda: wakes.append(1))
        batch = replace(
            make_batch("b", state=JobState.RUNNING, created_at=1_700_000_000.5), total=10
        )

        async def counted_while_rows_end(*, tenant: str, batch_id: str) -> BatchCounts:
            r.runner._job_ended(row_id(batch, 1))  # ended before the read: in the count
            await asyncio.sleep(0)
            for line in (2, 3, 3):  # ended while it is read: not in it (3 told twice)
                r.runner._job_ended(row_id(batch, line))
            return BatchCounts(total=10, running=9, succeeded=1)

        monkeypatch.setattr(r.batches.store, "batch_counts", counted_while_rows_end)
        assert r.runner._watch_rows(batch)
        await r.runner._count_active(batch)
        # 9 active as read, less the 3 ends told during the read (one of them already
        # counted: the count comes out low, never high)
        assert wakes == [] and r.runner._active == {"b": 6}
        for line in range(4, 9):
            r.runner._job_ended(row_id(batch, line))
        assert wakes == []
        r.runner._job_ended(row_id(batch, 9))
        assert wakes == [1]


async def test_a_rows_id_tells_its_batch_and_line_whatever_the_batch_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runner follows a batch's rows by what their ids share and a bit per line, not
    a table of their ids (150 bytes a row: batches over 10,000 rows were not followed at
    all): a million-row batch costs it 125 KB, and each line's end counts once."""
    async with rig(MemoryStore(), interval=NO_POLL) as r:
        wakes: list[int] = []
        monkeypatch.setattr(r.runner, "wake", lambda: wakes.append(1))
        running = make_batch("big", state=JobState.RUNNING, created_at=1_700_000_000.5)
        big = replace(running, total=1_000_000)
        other = replace(big, id="other", total=10)
        assert r.runner._watch_rows(big) and r.runner._watch_rows(other)
        assert sum(len(bits) for bits in r.runner._told.values()) < 126_000
        # as the watches' counts leave them: two rows of the big batch to end, three of
        # the other
        r.runner._active.update(big=2, other=3)
        for job_id in (
            row_id(big, 5),
            row_id(big, 5),  # told again (an event here, a notification from the database)
            row_id(other, 5),  # another batch's row
            new_uuid7(),  # a job of no batch
            row_id(replace(big, row_ids=1), 7),  # a name-based id
        ):
            r.runner._job_ended(job_id)
        assert wakes == [] and r.runner._active == {"big": 1, "other": 2}
        r.runner._job_ended(row_id(big, 1_000_000))
        assert wakes == [1]
        # a batch of name-based row ids is not followed: its turns step it
        assert not r.runner._watch_rows(replace(big, id="old", row_ids=1))
        r.runner._forget({"big", "other"})
        assert r.runner._told == {} and r.runner._families == {}
        r.runner._job_ended(row_id(big, 9))
        assert wakes == [1]


async def test_a_lost_wakeup_is_made_good_by_the_turns(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with rig(store, interval=0.2) as r:
        monkeypatch.setattr(r.runner, "wake", lambda: None)  # every wake-up is lost
        r.batches.on_created(r.runner.wake)
        await r.runner.start()
        await r.create("t1", "lost", [row(k) for k in (1, 2, 3, 4)])
        (lost,) = await r.ended(("t1", "lost"), timeout=20.0)
        await rows_once(r, lost, 4)


async def test_a_row_ending_in_another_process_wakes_the_runner_on_postgres() -> None:
    """Process A runs the rows; process B's runner, on a store of its own, finalizes the
    batch when PostgreSQL tells it the last row ended."""
    async with fresh_schema() as schema:
        settings = {"search_path": schema}
        a, b = (PostgresStore(database_url(), server_settings=settings) for _ in range(2))
        await a.open()
        await b.open()
        events_a, events_b = JobEvents(), JobEvents()
        registry = ModelRegistry(
            {"fake": ModelSpec(name="fake", engine="fake", context_length=64, slots=2)}
        )
        await registry.start()
        blobs = MemoryBlobs()
        service = BatchService(
            store=b,
            blobs=blobs,
            models=registry,
            events=events_b,
            formats={"openai": OpenAIBatchFormat()},
            limits=BatchLimits(max_rows=50, max_open=3),
        )
        runner = BatchRunner(batches=service, owner="runner-b", interval=NO_POLL)
        worker = Worker(store=a, registry=registry, events=events_a)
        try:
            for store, events in ((a, events_a), (b, events_b)):
                assert await store.listen(
                    on_submitted=events.job_submitted, on_ended=events.remote_ended
                )
            await worker.start()
            service.on_created(runner.wake)
            await runner.start()
            files = FileService(store=b, blobs=blobs)
            r = Rig(b, files, service, runner)
            await r.create("t1", "far", [row(k) for k in (1, 2)])
            (far,) = await r.ended(("t1", "far"), timeout=10.0)
            await rows_once(service, far, 2)
        finally:
            await runner.stop()
            await worker.stop()
            await registry.close()
            await a.close()
            await b.close()
