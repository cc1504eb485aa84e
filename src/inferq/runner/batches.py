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

A turn takes a batch through as many steps as it can go at once (validated rows
released, and the batch finalized the moment the watch sees no row active). The
runner wakes when a batch is created and when the last of the rows a watch of a batch
saw active ends, in this process or (on PostgreSQL, by the store's ended notification)
in any other; the turn every ``interval`` is only the fallback for a wake-up that is
lost.
"""

from __future__ import annotations

import functools
import logging
from typing import Unpack

from inferq.core.batch_format import row_family
from inferq.core.batches import BatchService
from inferq.core.ids import ordered_parts
from inferq.core.models import Batch
from inferq.core.states import JobState
from inferq.runner.periodic import RecordRunner, RunnerOptions

log = logging.getLogger("inferq.batches")

#: the batches the runner watches (their rows run) without taking their lease
WATCHED = (JobState.QUEUED, JobState.RUNNING)


class BatchRunner(RecordRunner):
    noun = "batch"

    def __init__(
        self, *, batches: BatchService, owner: str, **options: Unpack[RunnerOptions]
    ) -> None:
        super().__init__(store=batches.store, owner=owner, log=log, **options)
        self.batches = batches
        #: the watched batches by their rows' id family (ordered_parts): a row's id tells
        #: its batch and line, so a row's end wakes the runner whatever the batch's size,
        #: with no table of ids (one took 150 bytes a row)
        self._families: dict[int, str] = {}
        #: a bit per line of each of those batches: set once the line's end is told
        self._told: dict[str, bytearray] = {}
        #: how many of a mapped batch's rows are still to end, as of its last watch
        #: (counted down by their ends): waking for each row's end made each end cost a
        #: turn and a count of the batch's rows, and a 10,000-row batch ran at half speed
        self._active: dict[str, int] = {}
        #: how many of each mapped batch's lines have told their end
        self._ends: dict[str, int] = {}
        #: the batches whose rows are being counted now
        self._counting: set[str] = set()
        #: the batches watched in this turn (and the last)
        self._watched: set[str] = set()
        batches.events.on_ended(self._job_ended)

    async def turn(self) -> int:
        """Step every open batch once; return how many were stepped."""
        stepped = 0
        after = 0
        self.retries.prune(self.clock())
        watched, self._watched = self._watched, set()
        try:
            while True:
                page = await self.open_records(self.clock(), after=after)
                stepped += await self._step_page(page)
                if len(page) < self.page:
                    return stepped
                after = page[-1].seq
        finally:
            self._forget(watched - self._watched)

    async def _step_page(self, page: list[Batch]) -> int:
        stepped = 0
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
        return stepped

    async def _step(self, batch: Batch) -> bool:
        """Take one batch as many steps on as it can go now; False when another runner
        has it or it has ended."""
        if batch.state in WATCHED:
            # watching takes only reads and compare-and-set transitions: no lease,
            # so an idle turn writes nothing
            moved = await self._watch(batch)
            if moved is None or moved.state in WATCHED:
                return True
            batch = moved  # finalizing now: finalize in this turn, under the lease
        if not await self.lease(batch):
            return False
        current = await self.store.get_batch(batch.id, tenant=batch.tenant)
        if current is None or current.state.terminal:
            await self.release(batch)
            return False
        # on an error the lease stays: record_failed holds it for the wait before the next try
        renew = functools.partial(self.lease, current)
        moved = await self.batches.step(current, renew=renew)
        while moved is not None:  # validated (rows released), or finalizing: go on at once
            moved = (
                await self._watch(moved)
                if moved.state in WATCHED
                else await self.batches.step(moved, renew=renew)
            )
        # let the next turn (of any runner) pick it up without waiting
        await self.release(batch)
        return True

    async def _watch(self, batch: Batch) -> Batch | None:
        """Watch a batch whose rows run; the batch when the watch moved it on."""
        if self._watch_rows(batch):
            await self._count_active(batch)
        moved = await self.batches.step(batch, renew=self._no_renew)
        if moved is not None and moved.state in WATCHED:
            return None  # queued -> running: nothing more to do now
        return moved

    # -- waking up for the rows' ends -------------------------------------------------

    def _watch_rows(self, batch: Batch) -> bool:
        """Follow the batch's rows' ends (from before its counts are read: a row that
        ends after the read wakes the runner, or counts down to the wake); whether they
        are followed (not for a batch of name-based row ids, which its turns alone
        step)."""
        self._watched.add(batch.id)
        if batch.id in self._told:
            return True
        family = row_family(batch) if batch.total > 0 else None
        if family is None:
            return False
        self._families[family] = batch.id
        self._told[batch.id] = bytearray(batch.total // 8 + 1)
        return True

    async def _count_active(self, batch: Batch) -> None:
        """Count the batch's rows still to end. An end told while the count is read may
        or may not be in it: it wakes nothing and is taken off the count afterwards, so
        the count can come out low (a wake-up early, whose turn counts again) but never
        high (a wake-up lost). Waking for each such end started the next turn, and its
        count, at once: a 20,000-row batch's runner counted its rows 50 times a second
        (8 ms each), which slowed every row."""
        self._counting.add(batch.id)
        told = self._ends.get(batch.id, 0)
        try:
            counts = await self.batches.store.batch_counts(tenant=batch.tenant, batch_id=batch.id)
        except BaseException:
            self._active.pop(batch.id, None)  # every end wakes the runner until a count
            raise
        finally:
            self._counting.discard(batch.id)
        left = counts.active - (self._ends.get(batch.id, 0) - told)
        self._active[batch.id] = left
        if left <= 0 and counts.active > 0:
            self.wake()  # what the count saw active has ended meanwhile

    def _forget(self, batch_ids: set[str]) -> None:
        for batch_id in batch_ids & self._told.keys():
            del self._told[batch_id]
            self._active.pop(batch_id, None)
            self._ends.pop(batch_id, None)
        if batch_ids:
            self._families = {f: b for f, b in self._families.items() if b not in batch_ids}

    def _job_ended(self, job_id: str) -> None:
        """A row's end wakes the runner when it may be the batch's last: once the rows
        the last watch saw active have all ended (a row is counted once, however many
        times its end is told). Before its first count every end wakes it; while a
        count is read none does (:meth:`_count_active`)."""
        parts = ordered_parts(job_id)
        if parts is None:
            return
        family, line = parts
        batch_id = self._families.get(family)
        if batch_id is None:
            return
        told = self._told[batch_id]
        byte, bit = divmod(line, 8)
        if byte >= len(told) or told[byte] >> bit & 1:
            return  # not a line of the batch, or its end was told already
        told[byte] |= 1 << bit
        self._ends[batch_id] = self._ends.get(batch_id, 0) + 1
        if batch_id in self._counting:
            return  # taken off the count being read (_count_active)
        left = self._active.get(batch_id)
        if left is not None:
            self._active[batch_id] = left = left - 1
            if left > 0:
                return
        self.wake()

    async def give_up(self, record: Batch, reason: str) -> None:
        await self.batches.fail(record.id, tenant=record.tenant, reason=reason)

    @staticmethod
    async def _no_renew() -> bool:
        return True
