"""The batch runner: moves every open batch on, in whichever process runs workers.

Each turn it pages through the open batches (document workflow jobs are the
workflow runner's) whose bookkeeping lease is free. Batches whose rows are running
are only watched (reads, and transitions that are compare-and-set, so no lease is
needed). Validating and finalizing do long work (100,000 lines to check, result
files to write): for those it takes the lease, lets :meth:`BatchService.step` do
the work, and renews the lease as the step goes. A runner that dies mid-step leaves
a lease that runs out, and the next runner redoes the step, which is safe because
every step is.

One batch never stops the others: a step that raises is logged (in full once per
batch and state), the batch waits out a doubling delay (its lease is held for that
long, so no runner of the fleet takes it meanwhile), and after
:attr:`RetryPolicy.give_up_after` failures in a row it is ended with an error
saying so (:meth:`BatchService.fail`).
"""

from __future__ import annotations

import functools
import logging
from typing import Unpack

from inferq.core.batches import BatchService
from inferq.core.models import Batch
from inferq.core.states import JobState
from inferq.runner.periodic import RecordRunner, RunnerOptions

log = logging.getLogger("inferq.batches")


class BatchRunner(RecordRunner):
    noun = "batch"

    def __init__(
        self, *, batches: BatchService, owner: str, **options: Unpack[RunnerOptions]
    ) -> None:
        super().__init__(store=batches.store, owner=owner, log=log, **options)
        self.batches = batches

    async def turn(self) -> int:
        """Step every open batch once; return how many were stepped."""
        stepped = 0
        after = 0
        self.retries.prune(self.clock())
        while True:
            page = await self.open_records(self.clock(), after=after)
            for batch in page:
                if batch.dialect not in self.batches.formats:
                    continue  # no format for it in this process
                if not self.retries.due(batch.id, self.clock()):
                    continue
                try:
                    done = await self._step(batch)
                except Exception as exc:
                    await self.record_failed(batch, batch.state.value, exc)
                    continue
                self.recovered(batch)
                stepped += done
            if len(page) < self.page:
                return stepped
            after = page[-1].seq

    async def _step(self, batch: Batch) -> bool:
        """Step one batch; False when another runner has it or it has ended."""
        if batch.state in (JobState.QUEUED, JobState.RUNNING):
            # watching takes only reads and compare-and-set transitions: no lease,
            # so an idle turn writes nothing
            await self.batches.step(batch, renew=self._no_renew)
            return True
        if not await self.lease(batch):
            return False
        current = await self.store.get_batch(batch.id, tenant=batch.tenant)
        if current is None or current.state.terminal:
            await self.release(batch)
            return False
        # on an error the lease stays: record_failed holds it for the wait before the next try
        await self.batches.step(current, renew=functools.partial(self.lease, current))
        # let the next turn (of any runner) pick it up without waiting
        await self.release(batch)
        return True

    async def give_up(self, record: Batch, reason: str) -> None:
        await self.batches.fail(record.id, tenant=record.tenant, reason=reason)

    @staticmethod
    async def _no_renew() -> bool:
        return True
