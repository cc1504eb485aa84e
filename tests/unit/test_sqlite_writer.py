"""The SQLite writer thread: what a group of writes commits when one of them fails, and
how little it asks of the interpreter for a change of many rows.

The writer leaves the GIL for every statement it runs (and a trigger that calls Python
takes it back inside the statement), and while the event loop is busy each time it
takes the GIL back costs up to the switch interval: a writer whose work grows with the
rows it changes crawls beside a loaded server. So a chunk of batch rows is inserted by
one statement, and the bus's notes are written by SQL, not by a Python function per row.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from inferq.core.errors import Conflict, StoreUnavailable
from inferq.core.models import ApiKey
from inferq.core.ports import Ending, RowFilter
from inferq.core.states import JobState
from inferq.store import rows, sqlite
from inferq.store.sqlite import SQLiteStore
from inferq.store.sqlite_bus import available
from tests.contract.test_store_contract import T0, make_batch, make_job, make_row


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def writer_of(store: SQLiteStore) -> Any:
    writer = store.db._writer
    assert writer is not None
    return writer


async def hold_writer(store: SQLiteStore) -> tuple[threading.Event, asyncio.Future[Any]]:
    """Keep the writer busy until the event is set, so that the writes queued meanwhile
    are committed together, as one group."""
    gate, started = threading.Event(), threading.Event()

    def wait(conn: sqlite3.Connection) -> None:
        started.set()
        gate.wait(10)

    held = asyncio.ensure_future(store.db._write(wait, single=True))
    await asyncio.to_thread(started.wait, 10)
    return gate, held


def key(name: str) -> ApiKey:
    return ApiKey(id=f"key_{name}_{T0}", name=name, tenant="t1", prefix="sk-", created_at=T0)


async def test_a_statement_that_fails_changes_nothing_and_the_rest_of_its_group_commits(
    store: SQLiteStore,
) -> None:
    await store.insert_key(key("taken"), key_hash="h1")
    gate, held = await hold_writer(store)
    jobs = [make_job() for _ in range(10)]
    writes = [
        *(asyncio.ensure_future(store.insert_job(j)) for j in jobs[:5]),
        # the name is taken: SQLite refuses the statement (a UNIQUE constraint)
        asyncio.ensure_future(store.insert_key(replace(key("taken"), id="key_2"), key_hash="h2")),
        *(asyncio.ensure_future(store.insert_job(j)) for j in jobs[5:]),
    ]
    await asyncio.sleep(0.05)  # every write queued behind the held one
    gate.set()
    await held
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert isinstance(results[5], Conflict)
    assert not any(isinstance(r, BaseException) for i, r in enumerate(results) if i != 5)
    for job in jobs:
        assert await store.get_job(job.id, tenant=None) is not None
    assert [k.id for k in await store.list_keys()] == [key("taken").id]


async def test_a_one_statement_write_that_fails_after_its_changes_fails_its_whole_group(
    store: SQLiteStore,
) -> None:
    """A write said to be one statement that fails once its statement has changed rows
    cannot be undone alone (it has no savepoint): nothing of its group commits."""
    gate, held = await hold_writer(store)
    jobs = [make_job() for _ in range(3)]
    params = rows.job_params(make_job())
    insert = (
        "INSERT INTO jobs (id, tenant, model, origin, service_class, priority, state, request, "
        "info, max_attempts, created_at) VALUES (:id, :tenant, :model, :origin, :service_class, "
        ":priority, :state, :request, :info, :max_attempts, :created_at)"
    )

    def insert_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute(insert, {k: params[k] for k in params if f":{k}" in insert})
        raise ValueError("failed after its statement")

    writes = [
        *(asyncio.ensure_future(store.insert_job(j)) for j in jobs),
        asyncio.ensure_future(store.db._write(insert_then_fail, single=True)),
    ]
    await asyncio.sleep(0.05)
    gate.set()
    await held
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results)
    for job in jobs:
        assert await store.get_job(job.id, tenant=None) is None
    assert await store.get_job(params["id"], tenant=None) is None
    # the writer goes on
    assert (await store.insert_job(make_job())).seq > 0


class Counting:
    """The writer's connection, counting the statements run on it (``executemany``
    runs its statement once for each set of parameters)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.runs = 0

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self.runs += 1
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, params: Any) -> sqlite3.Cursor:
        params = list(params)
        self.runs += len(params)
        return self.conn.executemany(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


async def test_a_chunk_of_batch_rows_is_inserted_by_one_statement(store: SQLiteStore) -> None:
    batch = make_batch()
    writer = writer_of(store)
    counting = writer.conn = Counting(writer.conn)
    try:
        await store.insert_rows([make_row(batch, line) for line in range(1, 1001)])
    finally:
        writer.conn = counting.conn
    # BEGIN, the insert, the bus's notes, COMMIT: not one statement per row
    assert counting.runs < 10, f"{counting.runs} statements for 1,000 rows"
    counts = await store.batch_counts(tenant=batch.tenant, batch_id=batch.id)
    assert counts.total == 1000


async def test_a_chunk_too_big_for_one_statement_is_inserted_whole(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows are carried as JSON arrays, and SQLite caps one value's length (a billion bytes
    by default): a chunk of large rows (a line may be 8 MiB) goes in several statements."""
    writer = writer_of(store)
    writer.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 200_000)  # stands for the real cap
    monkeypatch.setattr(sqlite, "ROWS_BYTES", 100_000)
    batch = make_batch()
    made = [
        make_job(tenant=batch.tenant, text=f"{line} " + "é" * 3_000).evolve(
            state=JobState.VALIDATING, batch_id=batch.id, custom_id=f"r{line}", batch_line=line
        )
        for line in range(1, 61)
    ]
    counting = writer.conn = Counting(writer.conn)
    try:
        await store.insert_rows(made)
    finally:
        writer.conn = counting.conn
    assert 3 < counting.runs < 30
    stored = await store.batch_rows(
        RowFilter(tenant=batch.tenant, batch_id=batch.id, after_line=0, limit=100)
    )
    assert [r.evolve(seq=0) for r in stored] == made


@pytest.mark.skipif(not available(), reason="the bus needs Linux")
async def test_ending_many_rows_runs_no_python_per_row_on_the_writer(store: SQLiteStore) -> None:
    batch = make_batch()
    await store.insert_rows([make_row(batch, line) for line in range(1, 1001)])
    assert await store.release_rows(tenant=batch.tenant, batch_id=batch.id) == 1000
    writer = writer_of(store)
    calls = 0

    def count(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    def profile_writer(conn: sqlite3.Connection) -> None:
        sys.setprofile(count)  # on the writer thread, from its next write on

    def stop_profiling(conn: sqlite3.Connection) -> None:
        sys.setprofile(None)

    await store.db._write(profile_writer, single=True)
    try:
        ended = await store.finish_rows(
            Ending(JobState.CANCELLED), tenant=batch.tenant, batch_id=batch.id, now=T0 + 1
        )
    finally:
        await store.db._write(stop_profiling, single=True)
    assert ended == 1000
    assert writer.is_alive()
    assert calls < 200, f"{calls} Python calls on the writer to end 1,000 rows"
