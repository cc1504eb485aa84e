"""What an operator runs beside the work: webhooks and retention, built and run together.

:func:`build_operations` is called by the composition root (:mod:`inferq.runtime`); a
process with a worker also runs the webhook deliverer and the retention sweeper.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from inferq.config import Settings
from inferq.core.batch_format import BatchFormat
from inferq.core.events import JobEvents
from inferq.core.ports import BlobStore, Store
from inferq.core.retention import RetentionLimits, RetentionService
from inferq.core.webhooks import DEFAULT_KINDS, EventKinds, RetryPolicy, WebhookService
from inferq.runner.metrics import Metrics
from inferq.runner.sweeper import Sweeper
from inferq.runner.webhook_send import Sender
from inferq.runner.webhooks import Deliverer


@dataclass(kw_only=True, eq=False)
class Operations:
    webhooks: WebhookService
    retention: RetentionService
    deliverer: Deliverer | None = None
    sweeper: Sweeper | None = None

    async def start(self, events: JobEvents) -> None:
        """Start the deliverer (woken by every job's end) and the sweeper, where built."""
        if self.deliverer is not None:
            events.on_ended(self.deliverer.wake)
            await self.deliverer.start()
        if self.sweeper is not None:
            await self.sweeper.start()

    async def stop(self) -> None:
        if self.sweeper is not None:
            await self.sweeper.stop()
        if self.deliverer is not None:
            await self.deliverer.stop()


def build_operations(
    settings: Settings,
    *,
    store: Store,
    blobs: BlobStore,
    metrics: Metrics,
    formats: Mapping[str, BatchFormat],
    run: bool,
    kinds: EventKinds = DEFAULT_KINDS,
    clock: Callable[[], float] = time.time,
) -> Operations:
    """The services, and (``run``: in a process with a worker) the loops that run them."""
    retention = RetentionService(
        store=store,
        blobs=blobs,
        formats=formats,
        limits=RetentionLimits(days=settings.retention_days),
        clock=clock,
    )
    ops = Operations(
        webhooks=WebhookService(store=store, kinds=kinds, clock=clock), retention=retention
    )
    if run:
        ops.deliverer = Deliverer(
            store=store,
            sender=Sender(
                allow_private=settings.webhook_allow_private, timeout=settings.webhook_timeout
            ),
            kinds=kinds,
            retry=RetryPolicy(
                base=settings.webhook_retry_seconds, max_age=settings.webhook_max_age_hours * 3600
            ),
            metrics=metrics,
            clock=clock,
        )
        ops.sweeper = Sweeper(retention)
    return ops
