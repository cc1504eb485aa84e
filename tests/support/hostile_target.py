"""A server for hostile-input tests: on SQLite or on a fresh PostgreSQL schema (dropped
afterwards), with a tenant key and an httpx client that sends it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.acceptance.cluster import schema_url
from tests.integration.helpers import new_key, start_server
from tests.support.postgres import server_schema
from tests.support.server import Server


@contextlib.contextmanager
def served(
    root: Path, database: str, *, models: str, key_name: str
) -> Iterator[tuple[Server, str | None, httpx.Client]]:
    """The server (``database``: "sqlite" or "postgres"), its schema (None on SQLite)
    and a client with a key of its own."""
    schemas = server_schema() if database == "postgres" else contextlib.nullcontext(None)
    with schemas as schema:
        env = {} if schema is None else {"INFERQ_DATABASE_URL": schema_url(schema)}
        server = start_server(root, models=models, env=env)
        try:
            key = new_key(server, key_name)
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as http:
                yield server, schema, http
        finally:
            server.stop()
