"""What only the SQLite adapter has: a file that outlives the process, group commit,
and a schema version it guards."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from inferq.core.errors import StoreError
from inferq.core.states import JobState
from inferq.store.sqlite import SQLiteStore, migrate
from tests.contract.test_store_contract import claim, make_job


async def test_jobs_survive_reopening(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    await store.open()
    job = await store.insert_job(make_job())
    await claim(store)
    await store.close()

    reopened = SQLiteStore(tmp_path / "q.db")
    await reopened.open()
    got = await reopened.get_job(job.id, tenant=None)
    await reopened.close()
    assert got is not None and got.state is JobState.RUNNING and got.attempt == 1


async def test_concurrent_writes_are_all_committed_in_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    await store.open()
    jobs = await asyncio.gather(*(store.insert_job(make_job()) for _ in range(300)))
    assert len({j.seq for j in jobs}) == 300
    claimed = await claim(store, limit=1000)
    await store.close()
    # FIFO among equal priorities follows the order the writes were queued in
    assert [j.id for j in claimed] == [j.id for j in jobs]


async def test_one_failing_write_does_not_undo_its_group(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "q.db")
    await store.open()
    dup = make_job()
    await store.insert_job(dup)
    fresh = [make_job() for _ in range(20)]
    results = await asyncio.gather(
        *(store.insert_job(j) for j in [*fresh[:10], dup, *fresh[10:]]), return_exceptions=True
    )
    assert sum(isinstance(r, Exception) for r in results) == 1
    for job in fresh:
        assert await store.get_job(job.id, tenant=None) is not None
    await store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    migrate(conn)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    with pytest.raises(StoreError, match="newer than this inferq knows"):
        migrate(conn)
    conn.close()


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    version = migrate(conn)
    schema = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    assert migrate(conn) == version
    assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
    conn.close()
