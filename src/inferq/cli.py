"""The ``inferq`` command line: serve, worker, keys, models, jobs, batch.

Every command takes ``--data-dir`` (env ``INFERQ_DATA_DIR``) and works on the
same data while a server runs: the store is opened directly, and SQLite's WAL
lets the CLI and the server share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from inferq import __version__
from inferq.config import Settings
from inferq.core.batches import describe
from inferq.core.errors import Conflict, InferqError
from inferq.core.events import JobEvents
from inferq.core.files import blob_key
from inferq.core.keys import KeyService, TenantExists
from inferq.core.models import (
    ApiKey,
    Batch,
    BatchCounts,
    ChatResult,
    EmbedResult,
    FileRecord,
    Job,
    JobFilter,
)
from inferq.core.service import JobService
from inferq.core.states import JobState
from inferq.engines.registry import ModelRegistry, load_specs
from inferq.store.base import JobStore

if TYPE_CHECKING:
    from inferq.runtime import Runtime

T = TypeVar("T")

app = typer.Typer(
    help="inferq: durable inference jobs behind the APIs your clients already speak.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, show and cancel jobs.", no_args_is_help=True)
batch_app = typer.Typer(
    help="Run JSONL files of requests as batches; list, show, cancel, download.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")
app.add_typer(batch_app, name="batch")

out = Console()
err = Console(stderr=True)
if not out.is_terminal:
    # Piped or captured output has no width to fit; keep tables whole.
    out.width = 200

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory [env INFERQ_DATA_DIR; default ./inferq-data]."),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="sqlite:///PATH [env INFERQ_DATABASE_URL]."),
]
ModelsFile = Annotated[
    Path | None,
    typer.Option("--models", help="TOML models file [env INFERQ_MODELS_FILE]."),
]


def _settings(**given: Any) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _run(settings: Settings, action: Callable[[JobStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = settings.create_store()
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except InferqError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc


def _time(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [8000].")] = None,
    data_dir: DataDir = None,
    models: ModelsFile = None,
    database_url: DatabaseUrl = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run a worker in this process.")
    ] = True,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
) -> None:
    """Run the API and a worker. Creates and prints an admin key on the first start."""
    import uvicorn

    from inferq.api import redact
    from inferq.api.app import create_app
    from inferq.api.timeouts import http_protocol

    settings = _settings(
        host=host,
        port=port,
        data_dir=data_dir,
        models_file=models,
        database_url=database_url,
        worker=worker,
        log_level=log_level,
    )
    _logging(settings)
    try:
        load_specs(settings.models_file)
    except InferqError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    _first_start(settings)
    # signed URLs carry their credential in the path: keep it out of the access log
    # (uvicorn's logging setup keeps the filters of the loggers it configures)
    redact.install()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=True,
        http=http_protocol(
            header_timeout=settings.header_timeout, body_timeout=settings.body_timeout
        ),
    )


@app.command()
def worker(
    data_dir: DataDir = None,
    models: ModelsFile = None,
    database_url: DatabaseUrl = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
) -> None:
    """Run only a worker: load the models and run queued jobs, no HTTP.

    Start any number of them on one PostgreSQL database (INFERQ_DATABASE_URL) next to
    `inferq serve --no-worker` API processes. Stops cleanly on SIGINT or SIGTERM,
    handing its running jobs back to the queue.
    """
    import signal

    from inferq.runtime import open_runtime

    settings = _settings(
        data_dir=data_dir,
        models_file=models,
        database_url=database_url,
        log_level=log_level,
        worker=True,
    )
    _logging(settings)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with open_runtime(settings):
            await stop.wait()

    try:
        asyncio.run(run())
    except InferqError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc


db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply the schema migrations this database lacks (servers do it on start too)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def opened(store: JobStore) -> None:
        return None

    _run(settings, opened)
    out.print("the database schema is up to date")


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _first_start(settings: Settings) -> None:
    async def ensure_admin_key(store: JobStore) -> str | None:
        keys = KeyService(store)
        if await keys.has_keys():
            return None
        try:
            _, secret = await keys.create(name="admin", tenant="default", admin=True)
        except Conflict:  # another server starting on the same database made it first
            return None
        return secret

    secret = _run(settings, ensure_admin_key)
    if secret is None:
        return
    _show_admin_key(secret)


def _show_admin_key(secret: str) -> None:
    """Print the first admin key once, on stderr alone.

    Not on stdout too: a service manager or container runtime collects both, and
    the key must not be stored twice (nor inside a copy-paste example).
    """
    err.print(
        "\n[bold]Created an admin API key (tenant default). It is shown only this once:[/bold]\n"
    )
    err.print(secret, soft_wrap=True, highlight=False)
    err.print(
        "\nSend it as 'Authorization: Bearer KEY'. Create more keys (each a tenant of its "
        "own) with: inferq keys create --name NAME\n",
        soft_wrap=True,
        highlight=False,
    )


# -- keys --------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name for the key (unique).")],
    tenant: Annotated[
        str | None,
        typer.Option(
            help="The tenant whose jobs the key reads and writes; pass it to join an existing "
            "tenant. Without it the key gets a new tenant named like the key, and the command "
            "fails when a tenant of that name already exists."
        ),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key and print it alone on stdout (it is not shown again)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def create(store: JobStore) -> tuple[ApiKey, str]:
        try:
            return await KeyService(store).create(name=name, tenant=tenant)
        except TenantExists as exc:
            raise Conflict(
                f"the tenant {exc.tenant!r} already exists, and a key without --tenant gets "
                f"a new tenant named like the key. Pass --tenant {exc.tenant} to join that "
                "tenant (and read its jobs), or pick another --name."
            ) from exc

    key, secret = _run(settings, create)
    err.print(f"created key {key.id} ({key.name}) for tenant {key.tenant}")
    print(secret)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List keys (their secrets are never stored)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    keys = _run(settings, lambda store: KeyService(store).list())
    table = Table("id", "name", "tenant", "admin", "prefix", "created", "revoked")
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            key.tenant,
            "yes" if key.admin else "",
            key.prefix + "…",
            _time(key.created_at),
            _time(key.revoked_at),
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id or name.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key; requests with it get 401 within seconds."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    revoked = _run(settings, lambda store: KeyService(store).revoke(key))
    out.print(f"revoked {revoked.id} ({revoked.name})")


# -- models ------------------------------------------------------------------


@app.command("models")
def models_command(models: ModelsFile = None, data_dir: DataDir = None) -> None:
    """List the configured models."""
    settings = _settings(models_file=models, data_dir=data_dir)
    try:
        specs = load_specs(settings.models_file)
    except InferqError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    table = Table("model", "engine", "context", "slots", "options")
    for spec in specs.values():
        table.add_row(
            spec.name,
            spec.engine,
            str(spec.context_length),
            str(spec.slots),
            json.dumps(spec.options) if spec.options else "",
        )
    out.print(table)


# -- jobs --------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    model: Annotated[str | None, typer.Option(help="Only jobs of this model.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only jobs of this tenant.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List jobs, newest first."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    states = None
    if state is not None:
        try:
            states = frozenset({JobState(state)})
        except ValueError as exc:
            err.print(
                f"[red]error:[/red] unknown state {state!r}; one of "
                + ", ".join(s.value for s in JobState)
            )
            raise typer.Exit(2) from exc
    flt = JobFilter(tenant=tenant, model=model, states=states, limit=limit)
    jobs = _run(settings, lambda store: store.list_jobs(flt))
    table = Table()
    # ids are what the other commands take: never cut them
    table.add_column("id", no_wrap=True, min_width=36)
    for name in ("tenant", "model", "origin", "class", "prio", "state", "tries", "created"):
        table.add_column(name)
    for job in jobs:
        table.add_row(
            job.id,
            job.tenant,
            job.model,
            job.origin,
            job.service_class.name.lower(),
            str(job.priority),
            job.state.value,
            str(job.attempt),
            _time(job.created_at),
        )
    out.print(table)


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show one job in full."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    job = _run(settings, lambda store: store.get_job(job_id, tenant=None))
    if job is None:
        err.print(f"[red]error:[/red] job {job_id} not found")
        raise typer.Exit(1)
    table = Table(show_header=False)
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("tenant", job.tenant),
        ("model", job.model),
        ("origin", job.origin),
        ("class", job.service_class.name.lower()),
        ("priority", str(job.priority)),
        ("state", job.state.value),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("created", _time(job.created_at)),
        ("claimed", _time(job.claimed_at)),
        ("finished", _time(job.finished_at)),
        ("usage", f"{job.usage.prompt_tokens} prompt + {job.usage.completion_tokens} completion"),
        ("info", json.dumps(job.info)),
        ("request", json.dumps(job.request.to_dict(), ensure_ascii=False)),
        ("result", _result_text(job)),
        ("error", f"{job.error.code}: {job.error.message}" if job.error else ""),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Cancel a queued or running job (a running one stops within a second)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def cancel(store: JobStore) -> JobState:
        registry = ModelRegistry(load_specs(settings.models_file))
        jobs = JobService(store=store, models=registry, events=JobEvents())
        return (await jobs.cancel(job_id, tenant=None)).state

    state = _run(settings, cancel)
    out.print(f"job {job_id}: {state.value}")


def _result_text(job: Job) -> str:
    if isinstance(job.result, ChatResult):
        return job.result.text
    if isinstance(job.result, EmbedResult):
        return f"{len(job.result.vectors)} vectors of {len(job.result.vectors[0])} dimensions"
    return ""


# -- batches -----------------------------------------------------------------

Tenant = Annotated[
    str | None, typer.Option(help="The tenant the batch belongs to [any, for an id].")
]


def _with_runtime(settings: Settings, action: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run ``action`` on a runtime without a worker (the services, the store, the blobs)."""
    from inferq.runtime import open_runtime

    async def main() -> T:
        async with open_runtime(settings.model_copy(update={"worker": False})) as runtime:
            return await action(runtime)

    try:
        return asyncio.run(main())
    except InferqError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc


@batch_app.command("run")
def batch_run(
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
        err.print("[red]error:[/red] --worker is one of auto, yes, no")
        raise typer.Exit(2)
    if not input_file.is_file():
        err.print(f"[red]error:[/red] {input_file} is not a file")
        raise typer.Exit(2)
    settings = _settings(data_dir=data_dir, database_url=database_url, models_file=models)
    batch = _with_runtime(
        settings,
        lambda runtime: _submit(
            runtime, input_file, tenant=tenant, model=model, max_tokens=max_tokens
        ),
    )
    err.print(f"batch {batch.id} submitted ({input_file}, model {model}, tenant {tenant})")
    if not wait:
        print(batch.id)
        return
    final = _follow(settings, batch, run_here=run_here)
    _download(
        settings,
        final,
        output or input_file.with_suffix(".output.jsonl"),
        errors or input_file.with_suffix(".errors.jsonl"),
    )
    if final.state is not JobState.SUCCEEDED:
        raise typer.Exit(1)


async def _submit(
    runtime: Runtime, path: Path, *, tenant: str, model: str, max_tokens: int | None
) -> Batch:
    from inferq.core.files import DATASET

    now = time.time()
    batch_id = "cli-" + uuid.uuid4().hex[:12]
    dataset = await runtime.files.create_dataset(
        FileRecord(
            id=batch_id + "-input",
            tenant=tenant,
            kind=DATASET,
            purpose="dataset",
            filename=path.name,
            bytes=0,
            created_at=now,
            status="uploading",
            meta={"displayName": path.name, "format": "CHAT"},
        )
    )

    async def chunks() -> AsyncIterator[bytes]:
        with path.open("rb") as f:
            while data := await asyncio.to_thread(f.read, 1 << 20):
                yield data

    await runtime.files.add_dataset_file(dataset, name=_dataset_name(path), chunks=chunks())
    batch, _ = await runtime.batches.create(
        Batch(
            id=batch_id,
            tenant=tenant,
            dialect="fireworks",
            model=model,
            endpoint="/v1/chat/completions",
            state=JobState.VALIDATING,
            input_file_id=dataset.id,
            created_at=now,
            expires_at=now + runtime.settings.batch_window_hours * 3600,
            params={} if max_tokens is None else {"max_tokens": max_tokens},
            meta={
                "account": tenant,
                "displayName": path.name,
                "outputDatasetId": batch_id + "-output",
                "createdBy": "inferq batch run",
            },
        )
    )
    return batch


def _dataset_name(path: Path) -> str:
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.name)
    return name[:200] or "input.jsonl"


def _follow(settings: Settings, batch: Batch, *, run_here: str) -> Batch:
    """Show the batch's progress until it ends; run it here when asked (or needed)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from inferq.runtime import open_runtime

    async def main() -> Batch:
        async with contextlib.AsyncExitStack() as stack:
            runtime = await stack.enter_async_context(
                open_runtime(settings.model_copy(update={"worker": run_here == "yes"}))
            )
            working_here = run_here == "yes"
            started = time.monotonic()
            columns = (
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("failed {task.fields[failed]}"),
                TextColumn("{task.fields[rate]:.1f} tok/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=err, transient=False) as progress:
                task = progress.add_task(batch.id, total=None, failed=0, rate=0.0)
                while True:
                    current = await runtime.batches.get(batch.id, tenant=batch.tenant)
                    counts = await runtime.batches.counts(current)
                    elapsed = max(time.monotonic() - started, 1e-6)
                    progress.update(
                        task,
                        description=f"{batch.id} {current.state.value}",
                        total=counts.total or None,
                        completed=counts.done,
                        failed=counts.failed + counts.cancelled,
                        rate=counts.completion_tokens / elapsed,
                    )
                    if current.state.terminal:
                        return current
                    if (
                        not working_here
                        and run_here == "auto"
                        and current.state is JobState.VALIDATING
                        and time.monotonic() - started > 3
                    ):
                        progress.console.print(
                            "no worker took the batch up within 3 s: running it in this process"
                        )
                        await stack.enter_async_context(
                            open_runtime(settings.model_copy(update={"worker": True}))
                        )
                        working_here = True
                    await asyncio.sleep(0.5)

    try:
        final = asyncio.run(main())
    except InferqError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    _print_batch(final)
    return final


def _download(settings: Settings, batch: Batch, output: Path, errors: Path) -> None:
    async def fetch(runtime: Runtime) -> tuple[int, int]:
        fmt = runtime.batches.formats[batch.dialect]
        sizes = []
        for target, path in zip(fmt.output_files(batch), (output, errors), strict=True):
            key = blob_key(batch.tenant, target.record_id, target.name)
            size = 0
            with path.open("wb") as f:
                if await runtime.blobs.size(key) is not None:
                    async for chunk in runtime.blobs.read(key):
                        await asyncio.to_thread(f.write, chunk)
                        size += len(chunk)
            sizes.append(size)
        return sizes[0], sizes[1]

    if batch.state is JobState.FAILED:
        for error in batch.errors or []:
            err.print(f"[red]{describe(error)}[/red]")
        return
    written = _with_runtime(settings, fetch)
    err.print(f"results: {output} ({written[0]} bytes); errors: {errors} ({written[1]} bytes)")


def _print_batch(batch: Batch) -> None:
    counts = batch.counts
    done = (
        ""
        if counts is None
        else (
            f"{counts.succeeded} succeeded, {counts.failed} failed, {counts.cancelled} not run; "
            f"{counts.prompt_tokens} prompt + {counts.completion_tokens} completion tokens"
        )
    )
    err.print(f"batch {batch.id}: {batch.state.value}. {done}")
    if batch.error is not None:
        err.print(f"[red]{batch.error.message}[/red]")


@batch_app.command("list")
def batch_list(
    tenant: Tenant = None,
    state: Annotated[str | None, typer.Option(help="Only batches in this state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List batches of every API, newest first."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    states = None if state is None else frozenset({_state(state)})

    async def listing(runtime: Runtime) -> list[tuple[Batch, BatchCounts]]:
        found = await runtime.batches.list(tenant=tenant, dialect=None, limit=limit, states=states)
        return [(b, await runtime.batches.counts(b)) for b in found]

    table = Table()
    table.add_column("id", no_wrap=True)
    for name in ("tenant", "api", "model", "state", "rows", "done", "failed", "created"):
        table.add_column(name)
    for batch, counts in _with_runtime(settings, listing):
        table.add_row(
            batch.id,
            batch.tenant,
            batch.dialect,
            batch.model or "",
            batch.state.value,
            str(counts.total or batch.total),
            str(counts.succeeded),
            str(counts.failed + counts.cancelled),
            _time(batch.created_at),
        )
    out.print(table)


def _state(name: str) -> JobState:
    try:
        return JobState(name)
    except ValueError as exc:
        err.print(
            f"[red]error:[/red] unknown state {name!r}; one of "
            + ", ".join(s.value for s in JobState)
        )
        raise typer.Exit(2) from exc


@batch_app.command("show")
def batch_show(
    batch_id: Annotated[str, typer.Argument(help="The batch id.")],
    tenant: Tenant = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show one batch with its live row counts."""
    settings = _settings(data_dir=data_dir, database_url=database_url)

    async def show(runtime: Runtime) -> tuple[Batch, BatchCounts]:
        batch = await runtime.batches.get(batch_id, tenant=tenant)
        return batch, await runtime.batches.counts(batch)

    batch, counts = _with_runtime(settings, show)
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
        ("created", _time(batch.created_at)),
        ("validated", _time(batch.validated_at)),
        ("started", _time(batch.started_at)),
        ("finished", _time(batch.finished_at)),
        ("expires", _time(batch.expires_at)),
        ("output", batch.output_file_id or ""),
        ("errors file", batch.error_file_id or ""),
        ("error", batch.error.message if batch.error else ""),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
    for error in (batch.errors or [])[:20]:
        out.print(describe(error), highlight=False)


@batch_app.command("cancel")
def batch_cancel(
    batch_id: Annotated[str, typer.Argument(help="The batch id.")],
    tenant: Tenant = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Cancel a batch: rows not yet run are dropped, finished ones stay in its outputs."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    batch = _with_runtime(settings, lambda rt: rt.batches.cancel(batch_id, tenant=tenant))
    out.print(f"batch {batch_id}: {batch.state.value}")


@batch_app.command("download")
def batch_download(
    batch_id: Annotated[str, typer.Argument(help="The batch id.")],
    output: Annotated[Path | None, typer.Option(help="Where results go [ID.output.jsonl].")] = None,
    errors: Annotated[
        Path | None, typer.Option(help="Where per-row errors go [ID.errors.jsonl].")
    ] = None,
    tenant: Tenant = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write an ended batch's result and error files."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    batch = _with_runtime(settings, lambda rt: rt.batches.get(batch_id, tenant=tenant))
    if not batch.state.terminal:
        err.print(f"[red]error:[/red] batch {batch_id} is still {batch.state.value}")
        raise typer.Exit(1)
    _download(
        settings,
        batch,
        output or Path(f"{batch_id}.output.jsonl"),
        errors or Path(f"{batch_id}.errors.jsonl"),
    )
    if batch.state is JobState.FAILED:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
