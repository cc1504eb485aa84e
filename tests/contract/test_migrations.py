"""The migrations are the schema: replayed on SQLite and on PostgreSQL they give the same
tables with the same columns and the same indexes, and replaying them again changes nothing.

There is no separate declared schema file to drift from the migrations; to read the schema,
read ``store/sql/<dialect>/migrations/`` in order (or ``.schema`` of a migrated database).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg

from inferq.store.postgres import PostgresStore
from inferq.store.sqlite import migrate
from tests.support.postgres import database_url, fresh_schema


def sqlite_tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
    names = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations' ORDER BY name"
        )
    ]
    return {
        name: sorted(row[1] for row in conn.execute(f"PRAGMA table_xinfo({name})"))
        for name in names
    }


def sqlite_indexes(conn: sqlite3.Connection) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]


def sqlite_catalog(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master "
        "WHERE name NOT LIKE 'sqlite_%' AND name != 'schema_migrations' ORDER BY type, name"
    ).fetchall()
    return [(t, n, " ".join((s or "").split())) for t, n, s in rows]


CATALOG = """
SELECT 'column', table_name || '.' || column_name,
       data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
FROM information_schema.columns WHERE table_schema = $1 AND table_name != 'schema_migrations'
UNION ALL
SELECT 'index', indexname, indexdef FROM pg_indexes
WHERE schemaname = $1 AND tablename != 'schema_migrations'
UNION ALL
SELECT 'trigger', trigger_name || '.' || event_manipulation,
       action_statement || ' ' || coalesce(action_condition, '')
FROM information_schema.triggers WHERE trigger_schema = $1
ORDER BY 1, 2
"""


async def pg_catalog(schema: str) -> list[tuple[str, str, str]]:
    """Every column, index and trigger of ``schema``, as text (for migration tests)."""
    conn = await asyncpg.connect(database_url())
    try:
        rows = await conn.fetch(CATALOG, schema)
        return [(r[0], r[1], r[2].replace(schema + ".", "")) for r in rows]
    finally:
        await conn.close()


async def postgres_schema() -> tuple[dict[str, list[str]], list[str]]:
    async with fresh_schema() as schema:
        store = PostgresStore(database_url(), server_settings={"search_path": schema})
        await store.open()
        await store.close()
        conn = await asyncpg.connect(database_url())
        try:
            columns = await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = $1 AND table_name != 'schema_migrations'",
                schema,
            )
            indexes = await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1 "
                "AND tablename != 'schema_migrations' AND indexname NOT LIKE '%_pkey' "
                "AND indexname NOT LIKE '%_key'",
                schema,
            )
        finally:
            await conn.close()
    tables: dict[str, list[str]] = {}
    for row in columns:
        tables.setdefault(row["table_name"], []).append(row["column_name"])
    return {name: sorted(cols) for name, cols in sorted(tables.items())}, sorted(
        row["indexname"] for row in indexes
    )


def test_sqlite_migrations_replayed_again_change_nothing(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "migrated.db", isolation_level=None)
    migrate(conn)
    before = sqlite_catalog(conn)
    migrate(conn)
    assert before and sqlite_catalog(conn) == before


async def test_sqlite_and_postgres_migrations_give_the_same_tables_and_columns(
    tmp_path: Path,
) -> None:
    conn = sqlite3.connect(tmp_path / "migrated.db", isolation_level=None)
    migrate(conn)
    pg_tables, pg_indexes = await postgres_schema()
    lite_tables = sqlite_tables(conn)
    # PostgreSQL keeps blobs in the database too; SQLite installs keep them in a directory.
    pg_tables.pop("blobs", None)
    pg_tables.pop("blob_chunks", None)
    pg_tables.pop("blob_uploads", None)
    assert lite_tables and lite_tables == pg_tables
    # Every index SQLite has, PostgreSQL has by the same name (it may have more of its own).
    assert set(sqlite_indexes(conn)) <= set(pg_indexes)
