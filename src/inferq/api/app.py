"""The app factory: the one place where inferq's parts are put together.

The dialects come from one list (:data:`inferq.api.dialects.DIALECTS`): their
routers are mounted, their error renderers and upload paths handed to the error
handlers and the body limit, and their batch formats to the runtime (which imports
nothing from the API).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from inferq import __version__
from inferq.api import console, docs, health, metrics
from inferq.api.deps import Services
from inferq.api.dialects import DIALECTS
from inferq.api.errors import BodyLimitMiddleware, install_error_handlers
from inferq.api.guard import InputGuardMiddleware
from inferq.api.metrics import HttpMetricsMiddleware
from inferq.api.ratelimit import InflightLimitMiddleware, RateLimitHeadersMiddleware
from inferq.api.request_id import RequestIdMiddleware
from inferq.api.routing import install_path_starts
from inferq.api.timeouts import BodyTimeoutMiddleware
from inferq.blobs import BlobStore
from inferq.config import Settings
from inferq.engines.registry import ModelRegistry
from inferq.runner.metrics import Metrics
from inferq.runtime import freeze_startup_heap, open_runtime
from inferq.store.base import JobStore


def create_app(
    settings: Settings,
    *,
    store: JobStore | None = None,
    registry: ModelRegistry | None = None,
    blobs: BlobStore | None = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the API. The store, the engines and the worker start with the app
    (see :func:`inferq.runtime.open_runtime`).

    ``store``, ``registry`` and ``blobs`` replace the ones the settings describe
    (tests pass the in-memory store, the fake engine and in-memory blobs).
    ``freeze_heap``: a server process tunes its garbage collector once started
    (:func:`inferq.runtime.freeze_startup_heap`).
    """
    process_metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(
            settings,
            store=store,
            registry=registry,
            blobs=blobs,
            plugins=DIALECTS.plugins(),
            metrics=process_metrics,
        ) as runtime:
            app.state.runtime = runtime  # for tests and tools; routes get the services
            app.state.services = Services(
                settings=settings,
                registry=runtime.registry,
                jobs=runtime.jobs,
                keys=runtime.keys,
                limits=runtime.limits,
                files=runtime.files,
                batches=runtime.batches,
                workflows=runtime.workflows,
                store_answers=runtime.store.ping,
                models_loaded=lambda: runtime.ready,
                metrics_text=runtime.metrics_text,
                metrics=runtime.metrics,
                webhooks=runtime.ops.webhooks,
                nodes=runtime.nodes,
                node_work=runtime.node_work,
            )
            if freeze_heap:
                freeze_startup_heap()
            yield

    app = FastAPI(
        title="inferq",
        version=__version__,
        description="Self-hosted inference jobs behind the APIs your clients already speak.",
        lifespan=lifespan,
        # served from the package, not a CDN (docs.install)
        docs_url=None,
        redoc_url=None,
    )
    docs.install(app)
    console.install(app, settings)
    install_error_handlers(app, DIALECTS)
    # added first, so it runs inside the body limit: it only reads bodies under the limit
    app.add_middleware(InputGuardMiddleware, dialects=DIALECTS)
    app.add_middleware(
        BodyLimitMiddleware,
        dialects=DIALECTS,
        max_bytes=settings.max_body_bytes,
        max_file_bytes=settings.max_file_bytes,
    )
    app.add_middleware(BodyTimeoutMiddleware, dialects=DIALECTS, timeout=settings.body_timeout)
    # around all of them: counts the 408s and 413s too
    app.add_middleware(HttpMetricsMiddleware, metrics=process_metrics, dialects=DIALECTS)
    # every answer to a limited key carries its x-ratelimit-* headers
    app.add_middleware(RateLimitHeadersMiddleware)
    if settings.max_inflight_requests is not None:  # past the bound: a 503 at once
        app.add_middleware(
            InflightLimitMiddleware, dialects=DIALECTS, limit=settings.max_inflight_requests
        )
    # outermost: every answer carries the request id, and every log line of the request
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(metrics.router)
    for dialect in DIALECTS.all:
        app.include_router(dialect.router)
    # a request skips the routers none of whose paths it can have (inferq.api.routing)
    install_path_starts(app.router.routes)
    return app
