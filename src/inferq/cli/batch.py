"""``inferq batch``: run JSONL files of requests as batches; list, show, cancel and
download the batches of every API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from inferq.cli import batch_run
from inferq.cli.common import (
    DatabaseUrl,
    DataDir,
    Limit,
    ModelsFile,
    database_command,
    err,
    fail,
    out,
    settings,
    state_filter,
    timestamp,
    with_services,
)
from inferq.config import Settings
from inferq.core.batch_format import describe
from inferq.core.models import Batch, BatchCounts
from inferq.core.states import JobState

if TYPE_CHECKING:
    from inferq.runtime import Runtime

batch_app = typer.Typer(
    help="Run JSONL files of requests as batches; list, show, cancel, download.",
    no_args_is_help=True,
)

BatchId = Annotated[str, typer.Argument(help="The batch id.")]
Tenant = Annotated[
    str | None, typer.Option(help="The tenant the batch belongs to [any, for an id].")
]


@batch_app.command("run")
def batch_run_command(
    input_file: Annotated[Path, typer.Argument(help="JSONL: {custom_id, body} per line.")],
    model: Annotated[str, typer.Option(help="The model every row runs on.")],
    tenant: Annotated[str, typer.Option(help="The tenant the batch belongs to.")] = "default",
    max_tokens: Annotated[
        int | None, typer.Option(help="Default max_tokens of rows that set none.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Show progress until it ends, then download.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option(help="Where results go [INPUT.output.jsonl].")
    ] = None,
    errors: Annotated[
        Path | None, typer.Option(help="Where per-row errors go [INPUT.errors.jsonl].")
    ] = None,
    run_here: Annotated[
        str,
        typer.Option(
            "--worker",
            help="Run the batch in this process: 'auto' (when no worker takes it up "
            "within a few seconds), 'yes' or 'no'.",
        ),
    ] = "auto",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    models: ModelsFile = None,
) -> None:
    """Submit a JSONL file of chat requests as a batch; with --wait, follow it to the end.

    Rows are `{"custom_id": ..., "body": {"messages": [...], "max_tokens": ...}}`;
    OpenAI batch lines (with method, url and a body naming a model) work too.
    """
    if run_here not in ("auto", "yes", "no"):
        fail("--worker is one of auto, yes, no", 2)
    if not input_file.is_file():
        fail(f"{input_file} is not a file", 2)
    config = settings(data_dir=data_dir, database_url=database_url, models_file=models)
    batch = with_services(
        config,
        lambda runtime: batch_run.submit(
            runtime, input_file, tenant=tenant, model=model, max_tokens=max_tokens
        ),
    )
    err.print(f"batch {batch.id} submitted ({input_file}, model {model}, tenant {tenant})")
    if not wait:
        print(batch.id)
        return
    final = batch_run.follow(config, batch, run_here=run_here)
    batch_run.download(
        config,
        final,
        output or input_file.with_suffix(".output.jsonl"),
        errors or input_file.with_suffix(".errors.jsonl"),
    )
    if final.state is not JobState.SUCCEEDED:
        raise typer.Exit(1)


@database_command(batch_app, "list")
def batch_list(
    config: Settings,
    tenant: Tenant = None,
    state: Annotated[str | None, typer.Option(help="Only batches in this state.")] = None,
    limit: Limit = 50,
) -> None:
    """List batches of every API, newest first."""
    states = state_filter(state)

    async def listing(runtime: Runtime) -> list[tuple[Batch, BatchCounts]]:
        found = await runtime.batches.list(tenant=tenant, dialect=None, limit=limit, states=states)
        return [(b, await runtime.batches.counts(b)) for b in found]

    table = Table()
    table.add_column("id", no_wrap=True)
    for name in ("tenant", "api", "model", "state", "rows", "done", "failed", "created"):
        table.add_column(name)
    for batch, counts in with_services(config, listing):
        table.add_row(
            batch.id,
            batch.tenant,
            batch.dialect,
            batch.model or "",
            batch.state.value,
            str(counts.total or batch.total),
            str(counts.succeeded),
            str(counts.failed + counts.cancelled),
            timestamp(batch.created_at),
        )
    out.print(table)


@database_command(batch_app, "show")
def batch_show(config: Settings, batch_id: BatchId, tenant: Tenant = None) -> None:
    """Show one batch with its live row counts."""

    async def show(runtime: Runtime) -> tuple[Batch, BatchCounts]:
        batch = await runtime.batches.get(batch_id, tenant=tenant)
        return batch, await runtime.batches.counts(batch)

    batch, counts = with_services(config, show)
    table = Table(show_header=False)
    rows: list[tuple[str, str]] = [
        ("id", batch.id),
        ("tenant", batch.tenant),
        ("api", batch.dialect),
        ("model", batch.model or "(per row)"),
        ("endpoint", batch.endpoint),
        ("state", batch.state.value),
        ("input", batch.input_file_id),
        ("rows", json.dumps(counts.to_dict())),
        ("created", timestamp(batch.created_at)),
        ("validated", timestamp(batch.validated_at)),
        ("started", timestamp(batch.started_at)),
        ("finished", timestamp(batch.finished_at)),
        ("expires", timestamp(batch.expires_at)),
        ("output", batch.output_file_id or ""),
        ("errors file", batch.error_file_id or ""),
        ("error", batch.error.message if batch.error else ""),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
    for error in (batch.errors or [])[:20]:
        out.print(describe(error), highlight=False)


@database_command(batch_app, "cancel")
def batch_cancel(config: Settings, batch_id: BatchId, tenant: Tenant = None) -> None:
    """Cancel a batch: rows not yet run are dropped, finished ones stay in its outputs."""
    batch = with_services(config, lambda rt: rt.batches.cancel(batch_id, tenant=tenant))
    out.print(f"batch {batch_id}: {batch.state.value}")


@database_command(batch_app, "download")
def batch_download(
    config: Settings,
    batch_id: BatchId,
    output: Annotated[Path | None, typer.Option(help="Where results go [ID.output.jsonl].")] = None,
    errors: Annotated[
        Path | None, typer.Option(help="Where per-row errors go [ID.errors.jsonl].")
    ] = None,
    tenant: Tenant = None,
) -> None:
    """Write an ended batch's result and error files."""
    batch = with_services(config, lambda rt: rt.batches.get(batch_id, tenant=tenant))
    if not batch.state.terminal:
        fail(f"batch {batch_id} is still {batch.state.value}")
    batch_run.download(
        config,
        batch,
        output or Path(f"{batch_id}.output.jsonl"),
        errors or Path(f"{batch_id}.errors.jsonl"),
    )
    if batch.state is JobState.FAILED:
        raise typer.Exit(1)
