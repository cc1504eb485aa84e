"""What the stores add to the contract: group commit on every adapter (memory,
SQLite, PostgreSQL), and on the durable ones (SQLite, PostgreSQL) data that outlives
the store and a schema version they guard."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from inferq.core.errors import StoreError
from inferq.core.states import JobState
from inferq.store.base import JobStore
from inferq.store.memory import MemoryStore
from inferq.store.postgres import PostgresStore
from inferq.store.sqlite import SQLiteStore, migrate
from tests.contract.test_migrations import pg_catalog
from tests.contract.test_store_contract import claim, make_job
from tests.support.postgres import database_url, fresh_schema

#: a new store on one database each time it is called (SQLite: one file;
#: PostgreSQL: one schema), so that a test can close a store and open it again
Opener = Callable[[], JobStore]


@contextlib.asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[Opener]:
    """An :data:`Opener` of the adapter ``kind`` on a database of its own."""
    if kind == "memory":
        yield MemoryStore
    elif kind == "sqlite":
        yield lambda: SQLiteStore(tmp_path / "q.db")
    else:
        async with fresh_schema() as schema:
            yield lambda: PostgresStore(database_url(), server_settings={"search_path": schema})


@pytest.fixture(params=["sqlite", "postgres"])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    async with database(request.param, tmp_path) as opener:
        yield opener


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    async with database(request.param, tmp_path) as opener:
        yield opener


async def test_jobs_survive_reopening(durable: Opener) -> None:
    store = durable()
    await store.open()
    job = await store.insert_job(make_job())
    await claim(store)
    await store.close()

    reopened = durable()
    await reopened.open()
    got = await reopened.get_job(job.id, tenant=None)
    await reopened.close()
    assert got is not None and got.state is JobState.RUNNING and got.attempt == 1


async def test_concurrent_writes_are_all_committed_in_order(opener: Opener) -> None:
    store = opener()
    await store.open()
    jobs = await asyncio.gather(*(store.insert_job(make_job()) for _ in range(300)))
    assert len({j.seq for j in jobs}) == 300
    claimed = await claim(store, limit=1000)
    await store.close()
    # FIFO among equal priorities follows the order the writes were queued in
    assert [j.id for j in claimed] == [j.id for j in jobs]


async def test_one_failing_write_does_not_undo_its_group(opener: Opener) -> None:
    store = opener()
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


async def _record_version(store: JobStore, version: int) -> None:
    """Write ``version`` into the store's schema_migrations, as a newer inferq would."""
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(store.path, isolation_level=None)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'future', 0)", (version,))
        conn.close()
        return
    assert isinstance(store, PostgresStore)
    settings = store.db.server_settings
    pg = await asyncpg.connect(database_url(), server_settings=settings)
    try:
        await pg.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')", version
        )
    finally:
        await pg.close()


async def test_a_newer_schema_is_refused(durable: Opener) -> None:
    store = durable()
    await store.open()
    await store.close()
    await _record_version(store, 999)
    again = durable()
    with pytest.raises(StoreError, match="newer than this inferq knows"):
        await again.open()
    await again.close()


def test_a_newer_sqlite_schema_is_refused_by_migrate(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    migrate(conn)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    with pytest.raises(StoreError, match="newer than this inferq knows"):
        migrate(conn)
    conn.close()


def test_migrating_sqlite_twice_changes_nothing(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    version = migrate(conn)
    schema = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    assert migrate(conn) == version
    assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
    conn.close()


async def test_migrating_postgres_twice_changes_nothing() -> None:
    async with fresh_schema() as schema:
        catalogs = []
        for _ in range(2):
            store = PostgresStore(database_url(), server_settings={"search_path": schema})
            await store.open()
            await store.close()
            catalogs.append(await pg_catalog(schema))
        assert catalogs[0] and catalogs[0] == catalogs[1]
