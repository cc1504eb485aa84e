"""The composition root: the parts of one inferq process, opened and closed together.

``inferq serve`` wraps a runtime in the HTTP app (:func:`inferq.api.app.create_app`);
``inferq worker`` runs one without HTTP; :func:`open_services` opens one that runs
nothing, for the CLI's one-shot commands.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from inferq.blobs import BlobStore, create_blobs
from inferq.config import Settings
from inferq.core.batches import BatchFormat, BatchLimits, BatchService
from inferq.core.events import JobEvents
from inferq.core.files import FileLimits, FileService
from inferq.core.keys import KeyService
from inferq.core.limits import Limits, QueueBounds, RateLimiter
from inferq.core.node_messages import NodeLimits
from inferq.core.node_work import NodeWork
from inferq.core.nodes import NodeService
from inferq.core.service import JobService, ServiceLimits
from inferq.core.workflows import Catalogue, WorkflowLimits, WorkflowService
from inferq.engines.registry import ModelRegistry, load_specs
from inferq.engines.remote import embedder, kinds_of, replications_of
from inferq.runner.batches import BatchRunner
from inferq.runner.metrics import Metrics
from inferq.runner.operations import Operations, build_operations
from inferq.runner.worker import Worker, WorkerSettings
from inferq.runner.workflows import WorkflowRunner, executor_of
from inferq.store import JobStore, create_store


@dataclass(frozen=True, kw_only=True)
class Plugins:
    """What the dialects (in the API, which this module must not import) add to a runtime.

    The entry points build it from :data:`inferq.api.dialects.DIALECTS`.
    """

    #: each dialect's way of reading batch rows and writing their results, by dialect name
    batch_formats: Mapping[str, BatchFormat]
    #: the node subtypes and templates document workflows may use
    workflows: Catalogue


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: JobStore
    registry: ModelRegistry
    events: JobEvents
    jobs: JobService
    keys: KeyService
    blobs: BlobStore
    files: FileService
    batches: BatchService
    workflows: WorkflowService
    worker: Worker | None
    batch_runner: BatchRunner | None
    workflow_runner: WorkflowRunner | None
    #: whether this process loaded its models (a process without a worker does not)
    engines_loaded: bool
    #: this process's Prometheus metrics (``GET /metrics``)
    metrics: Metrics
    #: webhooks and retention (their deliverer and sweeper run beside a worker)
    ops: Operations
    #: node credentials, and the server's side of the node protocol
    nodes: NodeService
    node_work: NodeWork
    #: request and token limits of keys and tenants
    limits: RateLimiter

    async def metrics_text(self) -> bytes:
        """This process's metrics in Prometheus' text format, the queue gauges read from
        the store now (so every process of a fleet reports the same queue)."""
        return await self.metrics.scrape(
            self.store, nodes=self.store, node_window=self.node_work.limits.seen_within
        )

    @property
    def ready(self) -> bool:
        return self.registry.ready or not self.engines_loaded


def build_store(settings: Settings) -> JobStore:
    """The store that ``settings.database_url`` names, not yet opened."""
    return create_store(
        settings.database_url,
        data_dir=settings.data_dir,
        min_connections=settings.db_pool_min,
        max_connections=settings.db_pool_max,
    )


def build_blobs(settings: Settings) -> BlobStore:
    """The blob store that ``settings.blob_url`` names (by default: PostgreSQL when the
    job store is, else ``<data_dir>/blobs``), not yet opened."""
    return create_blobs(
        settings.blob_url, database_url=settings.database_url, default_dir=settings.blobs_dir
    )


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    plugins: Plugins,
    store: JobStore | None = None,
    registry: ModelRegistry | None = None,
    blobs: BlobStore | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Runtime]:
    """Open the store, load the engines and start the worker (as settings say).

    ``metrics``: where this process counts (the HTTP app passes the one its middleware
    observes into); a new one when None.
    """
    the_store = store or build_store(settings)
    tuned = settings.data_dir if settings.worker else None  # inferq tune: where models run
    the_registry = registry or ModelRegistry(load_specs(settings.models_file, tuning_dir=tuned))
    the_metrics = metrics or Metrics()
    the_metrics.set_models(the_registry.names())
    the_blobs = blobs or build_blobs(settings)
    events = JobEvents()
    batches = BatchService(
        store=the_store,
        blobs=the_blobs,
        models=the_registry,
        events=events,
        formats=dict(plugins.batch_formats),
        limits=BatchLimits(
            max_rows=settings.max_batch_rows,
            max_open=settings.max_open_batches,
            max_attempts=settings.max_retries + 1,
            window=settings.batch_window_hours * 3600,
            max_enqueued_tokens=settings.max_batch_enqueued_tokens,
        ),
    )
    nodes = NodeService(the_store, cache_seconds=settings.key_cache_seconds)
    node_work = NodeWork(
        store=the_store,
        blobs=the_blobs,
        events=events,
        nodes=nodes,
        kind_of=kinds_of(the_registry),
        limits=NodeLimits(
            lease_seconds=settings.lease_seconds,
            max_output_bytes=settings.node_max_output_bytes,
            max_file_bytes=settings.node_max_file_bytes,
        ),
        fair=settings.fairness,
        replication=replications_of(the_registry),
        embed=embedder(the_registry),
    )
    jobs = JobService(
        store=the_store,
        models=the_registry,
        events=events,
        limits=ServiceLimits(
            max_attempts=settings.max_retries + 1,
            queue=QueueBounds(per_tenant=settings.max_queued_per_tenant, total=settings.max_queued),
        ),
        ended_unrun=the_metrics.job_ended_unrun,
        nodes=node_work,  # sync requests for models only nodes run need a node connected
    )
    from inferq import documents

    workflows = WorkflowService(
        store=the_store,
        blobs=the_blobs,
        models=the_registry,
        documents=documents,
        catalogue=plugins.workflows,
        limits=WorkflowLimits(
            max_files=settings.workflow_max_files,
            max_file_bytes=settings.workflow_max_file_bytes,
            max_running=settings.workflow_max_running,
            chat_model=settings.workflow_chat_model or None,
            embed_model=settings.workflow_embed_model or None,
            launch_spacing=settings.workflow_launch_spacing,
        ),
        launches=the_store,
    )
    ops = build_operations(
        settings,
        store=the_store,
        blobs=the_blobs,
        metrics=the_metrics,
        formats=plugins.batch_formats,
        run=settings.worker,
    )
    await the_store.open()
    worker: Worker | None = None
    batch_runner: BatchRunner | None = None
    workflow_runner: WorkflowRunner | None = None
    try:
        await the_blobs.open()
        await the_store.listen(on_submitted=events.job_submitted, on_ended=events.remote_ended)
        relay = the_store.text_relay()
        if relay is not None:
            relay.start(events.relayed_text)
            events.relay = relay
        if settings.worker:
            await the_registry.start()
            worker = Worker(
                store=the_store,
                registry=the_registry,
                events=events,
                settings=WorkerSettings(
                    lease_seconds=settings.lease_seconds, fair=settings.fairness
                ),
                metrics=the_metrics,
            )
            await worker.start()
            jobs.offers = worker  # sync jobs claimed as they are stored (JobService.offers)
            batch_runner = BatchRunner(
                batches=batches, owner=worker.owner, lease_seconds=settings.lease_seconds
            )
            await batch_runner.start()
            batches.on_created(batch_runner.wake)
            workflow_runner = WorkflowRunner(
                store=the_store,
                executor=executor_of(workflows, jobs),
                owner=worker.owner,
                max_running=settings.workflow_max_running,
                lease_seconds=settings.lease_seconds,
            )
            await workflow_runner.start()
        await ops.start(events)
        yield Runtime(
            settings=settings,
            store=the_store,
            registry=the_registry,
            events=events,
            jobs=jobs,
            keys=KeyService(the_store, cache_seconds=settings.key_cache_seconds),
            limits=RateLimiter(
                the_store,
                defaults=Limits(settings.default_rpm, settings.default_tpm),
                cache_seconds=settings.key_cache_seconds,
            ),
            blobs=the_blobs,
            files=FileService(
                store=the_store,
                blobs=the_blobs,
                limits=FileLimits(max_bytes=settings.max_file_bytes),
            ),
            batches=batches,
            workflows=workflows,
            worker=worker,
            batch_runner=batch_runner,
            workflow_runner=workflow_runner,
            engines_loaded=settings.worker,
            metrics=the_metrics,
            ops=ops,
            nodes=nodes,
            node_work=node_work,
        )
    finally:
        await ops.stop()
        await node_work.close()
        if workflow_runner is not None:
            await workflow_runner.stop()
        if batch_runner is not None:
            await batch_runner.stop()
        if worker is not None:
            await worker.stop()
        await the_registry.close()
        await the_blobs.close()
        await the_store.close()


def open_services(
    settings: Settings, *, plugins: Plugins
) -> contextlib.AbstractAsyncContextManager[Runtime]:
    """Open the store, the blobs and the services, with no engine loaded and no worker.

    What a one-shot command needs (``inferq jobs cancel``, ``inferq batch show``): the
    models file is read, so that requests are checked against it, but nothing runs.
    """
    return open_runtime(settings.model_copy(update={"worker": False}), plugins=plugins)


#: the cyclic collector's thresholds in a long-running process once it started: a young
#: collection after 50,000 new container objects instead of 700, and the older ones a
#: fiftieth as often (bench/queue_submit.py: a third less CPU per submit, with the freeze)
GC_THRESHOLDS = (50_000, 50, 50)


def freeze_startup_heap() -> None:
    """Tune the garbage collector of a server or worker process that has started: what
    startup built (modules, the app, the models' metadata) is frozen out of the cyclic
    collector's reach (:func:`gc.freeze`), and its collections come less often. Each
    request allocates thousands of short-lived objects; with the defaults, collections
    came every few requests and walked the whole heap."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
