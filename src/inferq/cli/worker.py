"""``inferq worker``: load the models and run queued jobs, without HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from inferq.cli.common import (
    ServiceOptions,
    fail,
    run,
    service_command,
)


@service_command
def worker(
    options: ServiceOptions,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve GET /metrics and /healthz on this port (an admin key or "
            "INFERQ_METRICS_TOKEN) [env INFERQ_WORKER_METRICS_PORT; default: none]."
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(help="Address of the metrics listener [127.0.0.1]."),
    ] = None,
    heartbeat_fd: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run only a worker: load the models and run queued jobs, no API.

    Start any number of them on one PostgreSQL database (INFERQ_DATABASE_URL) next to
    `inferq serve --no-worker` API processes. Stops cleanly on SIGINT or SIGTERM,
    handing its running jobs back to the queue. With --metrics-port it serves its own
    job counters on GET /metrics (and GET /healthz) for Prometheus.
    """
    from inferq.api.dialects import DIALECTS
    from inferq.runtime import freeze_startup_heap, open_runtime

    config = options.settings(
        worker=True, worker_metrics_port=metrics_port, worker_metrics_host=metrics_host
    )
    sock = None
    if config.worker_metrics_port is not None:
        from inferq.cli.processes import bind

        host, port = config.worker_metrics_host, config.worker_metrics_port
        try:
            sock = bind(host, port)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port} for metrics: {exc}")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with contextlib.AsyncExitStack() as stack:
            runtime = await stack.enter_async_context(
                open_runtime(config, plugins=DIALECTS.plugins())
            )
            if sock is not None:
                from inferq.api.worker_metrics import serving_metrics

                await stack.enter_async_context(serving_metrics(runtime, sock))
            freeze_startup_heap()
            if heartbeat_fd is not None:  # under serve --workers N, once the models loaded
                from inferq.cli.processes import beat_forever

                beats = asyncio.create_task(beat_forever(heartbeat_fd))
                stack.callback(beats.cancel)
            await stop.wait()

    run(main())
