"""Real PostgreSQL for tests: one fresh schema per use, dropped afterwards.

The database comes from ``TEST_DATABASE_URL`` (default: the local server's
``test`` database). Tests that need it fail, never skip, when it is not running:
``.ci/run`` starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg

from inferq.store.postgres import PostgresStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def database_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_URL)


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A new empty schema; yields its name."""
    schema = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(database_url())
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield schema
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


@contextlib.contextmanager
def server_schema() -> Iterator[str]:
    """:func:`fresh_schema` for tests that run no event loop (servers in their own
    processes): a new empty schema; yields its name."""
    schema = "t_" + uuid.uuid4().hex[:12]
    asyncio.run(_execute(f"CREATE SCHEMA {schema}"))
    try:
        yield schema
    finally:
        asyncio.run(_execute(f"DROP SCHEMA {schema} CASCADE"))


async def _execute(statement: str) -> None:
    conn = await asyncpg.connect(database_url())
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def postgres_store(**kw: int) -> AsyncIterator[PostgresStore]:
    async with fresh_schema() as schema:
        store = PostgresStore(database_url(), server_settings={"search_path": schema}, **kw)
        await store.open()
        try:
            yield store
        finally:
            await store.close()
