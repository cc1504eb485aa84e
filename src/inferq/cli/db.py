"""``inferq db``: the database schema."""

from __future__ import annotations

import typer

from inferq.cli.common import database_command, out, with_store
from inferq.config import Settings
from inferq.store.base import JobStore

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@database_command(db_app, "upgrade")
def db_upgrade(config: Settings) -> None:
    """Apply the schema migrations this database lacks (servers do it on start too)."""

    async def opened(store: JobStore) -> None:
        return None

    with_store(config, opened)
    out.print("the database schema is up to date")
