"""``inferq db``: the database schema."""

from __future__ import annotations

import typer

from inferq.cli.common import DatabaseUrl, DataDir, out, settings, with_store
from inferq.store.base import JobStore

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply the schema migrations this database lacks (servers do it on start too)."""

    async def opened(store: JobStore) -> None:
        return None

    with_store(settings(data_dir=data_dir, database_url=database_url), opened)
    out.print("the database schema is up to date")
