"""Replaying every migration gives exactly the declared schema (schema.sql)."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import asyncpg

from inferq.store.postgres import PostgresStore
from inferq.store.sqlite import _statements, migrate
from tests.support.postgres import database_url, fresh_schema


def declared(dialect: str) -> str:
    return resources.files("inferq.store.sql").joinpath(dialect, "schema.sql").read_text()


def sqlite_catalog(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master "
        "WHERE name NOT LIKE 'sqlite_%' AND name != 'schema_migrations' ORDER BY type, name"
    ).fetchall()
    return [(t, n, " ".join((s or "").split())) for t, n, s in rows]


def test_sqlite_migrations_match_the_declared_schema(tmp_path: Path) -> None:
    migrated = sqlite3.connect(tmp_path / "migrated.db", isolation_level=None)
    migrate(migrated)
    fresh = sqlite3.connect(tmp_path / "declared.db", isolation_level=None)
    for statement in _statements(declared("sqlite")):
        fresh.execute(statement)
    assert sqlite_catalog(migrated) == sqlite_catalog(fresh)
    assert sqlite_catalog(migrated)  # not two empty catalogs


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
    conn = await asyncpg.connect(database_url())
    try:
        rows = await conn.fetch(CATALOG, schema)
        return [(r[0], r[1], r[2].replace(schema + ".", "")) for r in rows]
    finally:
        await conn.close()


async def test_postgres_migrations_match_the_declared_schema() -> None:
    async with fresh_schema() as migrated, fresh_schema() as fresh:
        store = PostgresStore(database_url(), server_settings={"search_path": migrated})
        await store.open()
        await store.close()
        conn = await asyncpg.connect(database_url(), server_settings={"search_path": fresh})
        try:
            await conn.execute(declared("postgres"))
        finally:
            await conn.close()
        got, want = await pg_catalog(migrated), await pg_catalog(fresh)
        assert got and got == want
