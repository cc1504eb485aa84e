"""A migration whose number is below the database's newest one still runs: migrations
land in any order (numbers are handed out before the work is done)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from inferq.store.sqlite import migrate
from tests.contract.test_migrations import sqlite_catalog


def test_a_migration_missing_below_the_newest_is_applied(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    migrate(conn)
    whole = sqlite_catalog(conn)
    # as if 0006 had landed after the database was at a newer version
    conn.execute("DROP INDEX files_expiry")
    conn.execute("DROP INDEX jobs_finished")
    conn.execute("ALTER TABLE files DROP COLUMN expires_at")
    conn.execute("DELETE FROM schema_migrations WHERE version = 6")
    assert sqlite_catalog(conn) != whole
    migrate(conn)
    assert sqlite_catalog(conn) == whole
    assert 6 in {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
