"""The app factory: the one place where inferq's parts are put together."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from inferq import __version__
from inferq.api import health, infera, openai, together
from inferq.api.deps import Services
from inferq.api.errors import BodyLimitMiddleware, install_error_handlers
from inferq.config import Settings
from inferq.core.events import JobEvents
from inferq.core.keys import KeyService
from inferq.core.service import JobService, ServiceLimits
from inferq.engines.registry import ModelRegistry, load_specs
from inferq.runner.worker import Worker, WorkerSettings
from inferq.store import create_store
from inferq.store.base import JobStore


def create_app(
    settings: Settings,
    *,
    store: JobStore | None = None,
    registry: ModelRegistry | None = None,
) -> FastAPI:
    """Build the API. The store, the engines and the worker start with the app.

    ``store`` and ``registry`` replace the ones the settings describe (tests
    pass the in-memory store and the fake engine).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_store = store or create_store(settings.database_url, data_dir=settings.data_dir)
        the_registry = registry or ModelRegistry(load_specs(settings.models_file))
        await the_store.open()
        worker: Worker | None = None
        try:
            await the_registry.start()
            events = JobEvents()
            jobs = JobService(
                store=the_store,
                models=the_registry,
                events=events,
                limits=ServiceLimits(max_attempts=settings.max_retries + 1),
            )
            app.state.services = Services(
                settings=settings,
                store=the_store,
                registry=the_registry,
                jobs=jobs,
                keys=KeyService(the_store, cache_seconds=settings.key_cache_seconds),
            )
            if settings.worker:
                worker = Worker(
                    store=the_store,
                    registry=the_registry,
                    events=events,
                    settings=WorkerSettings(lease_seconds=settings.lease_seconds),
                )
                await worker.start()
            yield
        finally:
            if worker is not None:
                await worker.stop()
            await the_registry.close()
            await the_store.close()

    app = FastAPI(
        title="inferq",
        version=__version__,
        description="Self-hosted inference jobs behind the APIs your clients already speak.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(together.router)
    app.include_router(openai.router)
    app.include_router(infera.router)
    return app
