"""The composition root: the parts of one inferq process, opened and closed together.

``inferq serve`` wraps a runtime in the HTTP app (:func:`inferq.api.app.create_app`);
``inferq worker`` runs one without HTTP.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from inferq.config import Settings
from inferq.core.events import JobEvents
from inferq.core.keys import KeyService
from inferq.core.service import JobService, ServiceLimits
from inferq.engines.registry import ModelRegistry, load_specs
from inferq.runner.worker import Worker, WorkerSettings
from inferq.store.base import JobStore


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: JobStore
    registry: ModelRegistry
    events: JobEvents
    jobs: JobService
    keys: KeyService
    worker: Worker | None
    #: whether this process loaded its models (a process without a worker does not)
    engines_loaded: bool

    @property
    def ready(self) -> bool:
        return self.registry.ready or not self.engines_loaded


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    store: JobStore | None = None,
    registry: ModelRegistry | None = None,
) -> AsyncIterator[Runtime]:
    """Open the store, load the engines and start the worker (as settings say)."""
    the_store = store or settings.create_store()
    the_registry = registry or ModelRegistry(load_specs(settings.models_file))
    events = JobEvents()
    await the_store.open()
    worker: Worker | None = None
    try:
        await the_store.listen(on_submitted=events.job_submitted, on_ended=events.remote_ended)
        if settings.worker:
            await the_registry.start()
            worker = Worker(
                store=the_store,
                registry=the_registry,
                events=events,
                settings=WorkerSettings(lease_seconds=settings.lease_seconds),
            )
            await worker.start()
        yield Runtime(
            settings=settings,
            store=the_store,
            registry=the_registry,
            events=events,
            jobs=JobService(
                store=the_store,
                models=the_registry,
                events=events,
                limits=ServiceLimits(max_attempts=settings.max_retries + 1),
            ),
            keys=KeyService(the_store, cache_seconds=settings.key_cache_seconds),
            worker=worker,
            engines_loaded=settings.worker,
        )
    finally:
        if worker is not None:
            await worker.stop()
        await the_registry.close()
        await the_store.close()
