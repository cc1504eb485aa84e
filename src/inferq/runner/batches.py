"""The batch runner: moves every open batch on, in whichever process runs workers.

Each turn it lists the batches that are not terminal and whose bookkeeping lease
is free. Batches whose rows are running are only watched (reads, and transitions
that are compare-and-set, so no lease is needed). Validating and finalizing do
long work (100,000 lines to check, result files to write): for those it takes
the lease, lets :meth:`BatchService.step` do the work, and renews the lease as
the step goes. A runner that dies mid-step leaves a lease that runs out, and the
next runner redoes the step, which is safe because every step is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable

from inferq.core.batches import BatchService
from inferq.core.events import wait_event
from inferq.core.models import Batch
from inferq.core.states import JobState

log = logging.getLogger("inferq.batches")


class BatchRunner:
    def __init__(
        self,
        *,
        batches: BatchService,
        owner: str,
        lease_seconds: float = 30.0,
        interval: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.batches = batches
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.turn()
            except Exception:
                log.exception("batch runner turn failed; retrying")
            await wait_event(self._wake, self.interval)
            self._wake.clear()

    async def turn(self) -> int:
        """Step every open batch once; return how many were stepped."""
        store = self.batches.store
        stepped = 0
        for batch in await store.active_batches(now=self.clock(), limit=100, workflows=False):
            if batch.dialect not in self.batches.formats:
                continue  # no format for it in this process
            if batch.state in (JobState.QUEUED, JobState.RUNNING):
                # watching takes only reads and compare-and-set transitions: no lease,
                # so an idle turn writes nothing
                await self.batches.step(batch, renew=self._no_renew)
                stepped += 1
                continue
            if not await self._lease(batch):
                continue
            current = await store.get_batch(batch.id, tenant=batch.tenant)
            if current is None or current.state.terminal:
                continue
            try:
                await self.batches.step(current, renew=functools.partial(self._lease, current))
            finally:
                # let the next turn (of any runner) pick it up without waiting
                await store.lease_batch(
                    current, owner=self.owner, now=self.clock(), until=self.clock() - 1
                )
            stepped += 1
        return stepped

    @staticmethod
    async def _no_renew() -> bool:
        return True

    async def _lease(self, batch: Batch) -> bool:
        now = self.clock()
        return await self.batches.store.lease_batch(
            batch, owner=self.owner, now=now, until=now + self.lease_seconds
        )
