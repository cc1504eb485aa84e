"""asyncpg, imported when a PostgreSQL adapter opens, and what its errors mean to them."""

from __future__ import annotations

from typing import Any

from inferq.core.errors import ConfigError


def import_asyncpg(what: str) -> Any:
    """The asyncpg module; a :class:`ConfigError` naming ``what`` needs it if missing."""
    try:
        import asyncpg
    except ImportError as exc:
        raise ConfigError(f"{what} needs asyncpg: pip install asyncpg") from exc
    return asyncpg


def unavailable_errors(asyncpg: Any) -> tuple[type[BaseException], ...]:
    """What asyncpg raises when the server cannot be reached now (the adapters answer
    :class:`~inferq.core.errors.StoreUnavailable`, which callers retry), as against a
    statement that failed (any other ``asyncpg.PostgresError``)."""
    return (
        OSError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
        # what asyncpg raises on a connection the server cut while it sat idle in the
        # pool (MagicStack/asyncpg#1069): the next request gets a fresh one
        asyncpg.InternalClientError,
    )
