"""A server for hostile-input tests: on SQLite or on a fresh PostgreSQL schema (dropped
afterwards), with a tenant key and an httpx client that sends it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx

from tests.acceptance.cluster import schema_url
from tests.integration.helpers import new_key, start_server
from tests.support.postgres import database_url
from tests.support.server import Server


async def _sql(statement: str) -> None:
    conn = await asyncpg.connect(database_url())
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def served(
    root: Path, database: str, *, models: str, key_name: str
) -> Iterator[tuple[Server, str | None, httpx.Client]]:
    """The server (``database``: "sqlite" or "postgres"), its schema (None on SQLite)
    and a client with a key of its own."""
    schema = None if database == "sqlite" else "t_" + uuid.uuid4().hex[:12]
    env = {} if schema is None else {"INFERQ_DATABASE_URL": schema_url(schema)}
    if schema is not None:
        asyncio.run(_sql(f"CREATE SCHEMA {schema}"))
    try:
        server = start_server(root, models=models, env=env)
        try:
            key = new_key(server, key_name)
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as http:
                yield server, schema, http
        finally:
            server.stop()
    finally:
        if schema is not None:
            asyncio.run(_sql(f"DROP SCHEMA {schema} CASCADE"))
