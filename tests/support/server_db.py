"""Reading a test server's own database, as the tests check what a request stored."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg

from tests.support.postgres import database_url

Rows = list[list[tuple[Any, ...]]]


def server_rows(data_dir: Path, schema: str | None, *statements: str) -> Rows:
    """The rows of each statement, in the SQLite database under ``data_dir`` (read-only)
    or, when ``schema`` is given, in that PostgreSQL schema of the test database."""
    if schema is None:
        conn = sqlite3.connect(f"file:{data_dir / 'inferq.db'}?mode=ro", uri=True)
        try:
            return [[tuple(r) for r in conn.execute(sql).fetchall()] for sql in statements]
        finally:
            conn.close()

    async def fetch() -> Rows:
        conn = await asyncpg.connect(database_url(), server_settings={"search_path": schema})
        try:
            return [[tuple(r) for r in await conn.fetch(sql)] for sql in statements]
        finally:
            await conn.close()

    return asyncio.run(fetch())
