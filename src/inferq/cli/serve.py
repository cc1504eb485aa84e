"""``inferq serve``: the API and (by default) a worker in one process; the first start
creates the admin key and prints it once, on stderr."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from inferq.cli.common import (
    ServiceOptions,
    err,
    fail,
    load_models,
    service_command,
    with_store,
)
from inferq.config import Settings
from inferq.core.errors import Conflict
from inferq.core.keys import KeyService
from inferq.store.base import JobStore


@service_command
def serve(
    options: ServiceOptions,
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [8000].")] = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run a worker in this process.")
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="API processes sharing the port; with more than one, the models run "
            "in one worker process beside them [1].",
        ),
    ] = 1,
    worker_metrics_port: Annotated[
        int | None,
        typer.Option(
            help="With --workers N: the worker process serves its job metrics on "
            "GET /metrics at this port (inferq worker --metrics-port) "
            "[env INFERQ_WORKER_METRICS_PORT]."
        ),
    ] = None,
    fd: Annotated[int | None, typer.Option(hidden=True)] = None,
    heartbeat_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the API and a worker. Creates and prints an admin key on the first start."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from inferq.api import redact
    from inferq.api.app import create_app
    from inferq.api.timeouts import http_protocol
    from inferq.cli.processes import heartbeat

    config = options.settings(host=host, port=port, worker=worker)
    load_models(config)
    first_start(config)
    if workers > 1:
        # the children inherit the environment: the database URL goes there, not in
        # their command lines
        os.environ.update(options.environ())
        argv = options.argv()
        _serve_processes(config, workers=workers, argv=argv, metrics_port=worker_metrics_port)
        return
    # signed URLs carry their credential in the path: keep it out of the access log
    # (uvicorn's logging setup keeps the filters of the loggers it configures)
    redact.install()
    uvicorn_config = uvicorn.Config(
        create_app(config, freeze_heap=True),
        host=config.host,
        port=config.port,
        log_level=config.log_level.lower(),
        # JSON: uvicorn's loggers propagate to the one handler configure_logging set
        # (uvicorn's own text handlers would bypass it)
        log_config=None if config.log_format == "json" else _text_log_config(LOGGING_CONFIG),
        access_log=True,
        http=http_protocol(header_timeout=config.header_timeout, body_timeout=config.body_timeout),
        # uvicorn calls it from its event loop about once a second while the loop runs
        callback_notify=None if heartbeat_fd is None else heartbeat(heartbeat_fd),
        timeout_notify=HEARTBEAT_EVERY,
    )
    server = uvicorn.Server(uvicorn_config)
    server.run(sockets=None if fd is None else [inherited_socket(fd)])
    if not server.started:
        raise typer.Exit(STARTUP_FAILURE)


#: uvicorn's exit status when the server could not start (e.g. the port is taken)
STARTUP_FAILURE = 3
#: uvicorn looks about once a second whether more than this many seconds passed since
#: an API process's last heartbeat to the supervisor of ``--workers N``: 0, every time
HEARTBEAT_EVERY = 0


def inherited_socket(fd: int) -> socket.socket:
    """The listening socket of ``--workers N`` (:mod:`inferq.cli.processes`), as its own
    family: uvicorn's ``fd=`` option opens any descriptor as a Unix socket, so the
    connections it accepted from a TCP socket kept Nagle's algorithm on (the event loop
    sets TCP_NODELAY only on TCP sockets) and every response that went out in more than
    one write waited for the client's delayed ACK, about 40 ms."""
    return socket.socket(fileno=fd)


def _text_log_config(uvicorn_config: Mapping[str, Any]) -> dict[str, Any]:
    """uvicorn's logging configuration, its access lines written by inferq's formatter
    (the same lines, for a third of the time: :mod:`inferq.api.access_log`)."""
    formatters = dict(uvicorn_config["formatters"])
    formatters["access"] = {**formatters["access"], "()": "inferq.api.access_log.AccessFormatter"}
    return {**uvicorn_config, "formatters": formatters}


def _serve_processes(
    config: Settings,
    *,
    workers: int,
    argv: list[str],
    metrics_port: int | None = None,
) -> None:
    """The supervisor of ``--workers N`` (:mod:`inferq.cli.processes`); ``argv``, the
    options given, is passed on to every process it starts; ``metrics_port`` goes to
    the worker (its environment's INFERQ_WORKER_METRICS_PORT reaches it anyway)."""
    from inferq.cli.processes import bind_each, serve_processes

    try:
        socks = bind_each(config.host, config.port, workers)
    except OSError as exc:
        fail(f"cannot listen on {config.host}:{config.port}: {exc}")
    err.print(f"inferq: {workers} API processes on http://{config.host}:{config.port}")
    with contextlib.ExitStack() as held:
        for sock in socks:
            held.enter_context(sock)
        raise typer.Exit(
            serve_processes(
                socks=socks,
                workers=workers,
                engine_worker=config.worker,
                options=argv,
                worker_options=_worker_options(metrics_port),
                stall_timeout=config.stall_timeout,
            )
        )


def _worker_options(metrics_port: int | None) -> list[str]:
    """The flags of ``inferq worker`` that only the worker process gets."""
    return [] if metrics_port is None else ["--metrics-port", str(metrics_port)]


def first_start(config: Settings) -> None:
    """Create the admin key of a database without keys, and print it once."""

    async def ensure_admin_key(store: JobStore) -> str | None:
        keys = KeyService(store)
        if await keys.has_keys():
            return None
        try:
            _, secret = await keys.create(name="admin", tenant="default", admin=True)
        except Conflict:  # another server starting on the same database made it first
            return None
        return secret

    secret = with_store(config, ensure_admin_key)
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
