"""The store adapters, picked from a URL by :func:`create_store`.

The ports they implement are core's (:mod:`inferq.core.ports`); ``JobStore`` is all of
them at once.
"""

from __future__ import annotations

from pathlib import Path

from inferq.core.errors import ConfigError
from inferq.store.base import JobStore

__all__ = ["JobStore", "create_store"]


def create_store(
    url: str, *, data_dir: Path, min_connections: int = 1, max_connections: int = 10
) -> JobStore:
    """The store for ``url``.

    ``postgresql://…`` (PostgreSQL), ``sqlite:///PATH``, ``sqlite://`` or empty (SQLite
    in the data dir), ``memory://`` (nothing kept; tests).
    """
    if url.startswith(("postgresql://", "postgres://")):
        from inferq.store.postgres import PostgresStore

        return PostgresStore(url, min_connections=min_connections, max_connections=max_connections)
    if url.startswith("memory://"):
        from inferq.store.memory import MemoryStore

        return MemoryStore()
    if url == "sqlite://" or url == "":
        from inferq.store.sqlite import SQLiteStore

        return SQLiteStore(data_dir / "inferq.db")
    if url.startswith("sqlite:///"):
        from inferq.store.sqlite import SQLiteStore

        return SQLiteStore(Path(url.removeprefix("sqlite:///")))
    raise ConfigError(
        f"unsupported database URL {url!r}: use postgresql://…, sqlite:///PATH or memory://"
    )
