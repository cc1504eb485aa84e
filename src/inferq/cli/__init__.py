"""The ``inferq`` command line: serve, worker, models, tune, keys, jobs, batch, db, blobs.

Every command takes ``--data-dir`` (env ``INFERQ_DATA_DIR``) and works on the
same data while a server runs: the store is opened directly, and SQLite's WAL
lets the CLI and the server share it.

One module per command group; :mod:`inferq.cli.common` holds the options they share,
the error reporting and the way a command opens the store or the services.
"""

from __future__ import annotations

from typing import Annotated

import typer

from inferq import __version__
from inferq.cli.batch import batch_app
from inferq.cli.blobs import blobs_app
from inferq.cli.common import out
from inferq.cli.db import db_app
from inferq.cli.jobs import jobs_app
from inferq.cli.keys import keys_app
from inferq.cli.models import models_command
from inferq.cli.node import node
from inferq.cli.nodes import nodes_app
from inferq.cli.serve import first_start as _first_start
from inferq.cli.serve import serve
from inferq.cli.tenants import tenants_app
from inferq.cli.tune import tune
from inferq.cli.webhooks import webhooks_app
from inferq.cli.worker import worker

__all__ = ["_first_start", "app", "main"]

app = typer.Typer(
    help="inferq: durable inference jobs behind the APIs your clients already speak.",
    no_args_is_help=True,
    add_completion=False,
    # plain help: the options' "[env …; default …]" hints are text, not rich markup
    # (which would swallow them); every command group inherits it
    rich_markup_mode=None,
)
app.command()(serve)
app.command()(worker)
app.command()(node)
app.command("models")(models_command)
app.command()(tune)
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")
app.add_typer(jobs_app, name="jobs")
app.add_typer(batch_app, name="batch")
app.add_typer(db_app, name="db")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(blobs_app, name="blobs")
app.add_typer(nodes_app, name="nodes")


def _version(value: bool) -> None:
    if value:
        out.print(f"inferq {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """inferq: durable inference jobs behind the APIs your clients already speak."""


def main() -> None:
    app()
