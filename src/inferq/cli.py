"""The ``inferq`` command line: serve, keys, models, jobs.

Every command takes ``--data-dir`` (env ``INFERQ_DATA_DIR``) and works on the
same data while a server runs: the store is opened directly, and SQLite's WAL
lets the CLI and the server share it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from inferq import __version__
from inferq.config import Settings
from inferq.core.errors import Conflict, InferqError
from inferq.core.events import JobEvents
from inferq.core.keys import KeyService
from inferq.core.models import JobFilter
from inferq.core.service import JobService
from inferq.core.states import JobState
from inferq.engines.registry import ModelRegistry, load_specs
from inferq.store.base import JobStore

T = TypeVar("T")

app = typer.Typer(
    help="inferq: durable inference jobs behind the APIs your clients already speak.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, show and cancel jobs.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")

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

    from inferq.api.app import create_app

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
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=True,
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
    base = f"http://{settings.host}:{settings.port}"
    out.print("\n[bold]Created an admin API key. It is shown only this once:[/bold]\n")
    out.print(secret, soft_wrap=True, highlight=False)
    out.print("\nTry it:\n", highlight=False)
    out.print(
        f"curl {base}/v1/chat/completions -H 'Authorization: Bearer {secret}' "
        '-H \'Content-Type: application/json\' -d \'{"model": "smollm2-135m-instruct", '
        '"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}\'\n',
        soft_wrap=True,
        highlight=False,
    )


# -- keys --------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name for the key (unique).")],
    tenant: Annotated[
        str | None, typer.Option(help="The tenant its jobs belong to [the name].")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key and print it alone on stdout (it is not shown again)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    key, secret = _run(settings, lambda store: KeyService(store).create(name=name, tenant=tenant))
    err.print(f"created key {key.id} ({key.name}) for tenant {key.tenant}")
    print(secret)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List keys (their secrets are never stored)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    keys = _run(settings, lambda store: KeyService(store).list())
    table = Table("id", "name", "tenant", "prefix", "created", "revoked")
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            key.tenant,
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
        ("messages", json.dumps([m.to_dict() for m in job.request.messages], ensure_ascii=False)),
        ("result", job.result.text if job.result else ""),
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


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
