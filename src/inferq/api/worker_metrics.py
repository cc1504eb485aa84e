"""The metrics listener of a process that runs only a worker (``inferq worker
--metrics-port``): ``GET /metrics`` and ``GET /healthz`` on a small ASGI app, served by
uvicorn inside the worker's own event loop.

A worker has no API, so its job counters, histograms, token counts and engine slots
would otherwise never be seen. The endpoint answers as the API's does
(:func:`inferq.api.metrics.authorize_scrape`: an admin key or the metrics token, 401
otherwise), with the worker's own :class:`~inferq.runner.metrics.Metrics` and the
queue gauges read from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inferq.api.metrics import authorize_scrape
from inferq.core.errors import AuthenticationFailed
from inferq.runner.metrics import CONTENT_TYPE
from inferq.runtime import Runtime


def worker_metrics_app(runtime: Runtime) -> Starlette:
    """``/metrics`` (an admin key or the metrics token) and ``/healthz`` (open)."""

    async def metrics(request: Request) -> Response:
        try:
            await authorize_scrape(request, token=runtime.settings.metrics_token, keys=runtime.keys)
        except AuthenticationFailed as exc:
            return JSONResponse(
                {"error": {"message": exc.message, "type": "authentication_error"}},
                status_code=401,
            )
        return Response(await runtime.metrics_text(), media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz)],
    )


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the worker's own decide when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serving_metrics(runtime: Runtime, sock: socket.socket) -> AsyncIterator[None]:
    """Serve :func:`worker_metrics_app` on the bound ``sock`` while the block runs."""
    config = uvicorn.Config(
        worker_metrics_app(runtime),
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield
    finally:
        server.should_exit = True
        await task
