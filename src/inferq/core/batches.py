"""BatchService: a file of requests, run as one durable row job per request.

A batch moves through the job states; each dialect renders them its own way::

    validating -> queued -> running -> finalizing -> succeeded | expired
        |           |          `-> cancelling -> cancelled
        `-> failed (the file did not validate)

* **validating**: the runner checks every input line with the dialect's
  :class:`BatchFormat` and stores the rows unclaimable, then releases them all at
  once, or fails the batch naming its bad lines (:mod:`inferq.core.batch_validation`).
* **queued / running**: workers run the rows like any other job, below sync and
  queued work (service class ``BATCH``). A row's priority is minus its line, so
  the claim takes row *k* of every open batch before row *k + 1* of any: batches
  share the engines round-robin instead of first-come-first-served.
* **finalizing**: once no row is waiting or running (or the completion window
  ran out), the runner streams the rows in line order into a result file and an
  error file. Those files are written from the stored rows, in one pass, after
  every row ended: no row appears twice or goes missing, whatever crashed before.

Every step is a compare-and-set on the batch's state, so two runners, or a runner
and a client's cancel, never both win a transition; the bookkeeping lease keeps
two runners from doing the same work at once.

A dialect hands :meth:`BatchService.submit` a :class:`NewBatch` (what its request
asked for); the service gives the batch its id, its times and its expiry (the
completion window, :attr:`BatchLimits.window`, is the same for every dialect) and
wakes the runner.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inferq.core.batch_format import (
    CHUNK,
    BatchFormat,
    BatchLimits,
    ModelNames,
    NewBatch,
    OutputFile,
    ParsedRow,
    describe,
    row_id,
)
from inferq.core.batch_validation import BatchParts, BatchValidator, Renew
from inferq.core.errors import Conflict, InvalidRequest, NotFound, QueueFull
from inferq.core.files import blob_key, file_names, line_count
from inferq.core.models import Batch, BatchCounts, JobError
from inferq.core.ports import BatchFilter, Ending, RowFilter
from inferq.core.retention import with_output_expiry
from inferq.core.states import TERMINAL_STATES, JobState, check_transition

__all__ = [
    "BatchFormat",
    "BatchLimits",
    "BatchService",
    "ModelNames",
    "NewBatch",
    "OutputFile",
    "ParsedRow",
    "describe",
    "row_id",
]

log = logging.getLogger("inferq.batches")

EXPIRED_ROW = JobError(
    "batch_expired", "This request could not be executed before the completion window expired."
)
CANCELLED_ROW = JobError("batch_cancelled", "The batch was cancelled before this request ran.")
#: the states in which a client can still cancel a batch
CANCELLABLE = frozenset({JobState.VALIDATING, JobState.QUEUED, JobState.RUNNING})


def _dumps(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


@dataclass(kw_only=True, eq=False)
class BatchService(BatchParts):
    """What the dialects and the batch runner call; built from its :class:`BatchParts`."""

    def __post_init__(self) -> None:
        self._on_created: list[Callable[[], None]] = []
        self._validator = BatchValidator(self, transition=self._transition)

    def on_created(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever a batch is created (a runner wakes up for it)."""
        self._on_created.append(listener)

    # -- what the dialects call ----------------------------------------------------

    async def submit(self, new: NewBatch) -> tuple[Batch, bool]:
        """Create the batch a dialect asks for: its id, its times, ``validating``.

        It expires at the end of the completion window (:attr:`BatchLimits.window`).
        Returns the batch and whether it was created (False: an earlier request with
        the same idempotency key created it); see :meth:`create` for the checks.
        """
        now = self.clock()
        expires_at = now + self.limits.window
        return await self.create(new.record(JobState.VALIDATING, now=now, expires_at=expires_at))

    async def create(self, batch: Batch) -> tuple[Batch, bool]:
        """Check and store a new batch in ``validating``; the runner takes it from there.

        Returns the batch and whether it was created (False: an earlier request with
        the same idempotency key created it).
        """
        if batch.dialect not in self.formats:
            raise InvalidRequest(f"no batch format {batch.dialect!r}")
        if batch.model is not None and batch.model not in self.models.names():
            raise InvalidRequest(
                f"model {batch.model!r} does not exist; available: "
                + ", ".join(sorted(self.models.names())),
                param="model",
            )
        if batch.continued_from is not None:
            earlier = await self.get(batch.continued_from, tenant=batch.tenant)
            if not earlier.state.terminal:
                raise Conflict(
                    f"batch {earlier.id} is still {earlier.state.value}; "
                    "continue it once it has ended",
                    param="continuedFromJobName",
                )
        else:
            record = await self.store.get_file(batch.input_file_id, tenant=batch.tenant)
            if record is None:
                raise NotFound(f"input file {batch.input_file_id} not found", param="input_file_id")
            if record.status not in ("ready", "processed") or not file_names(record):
                raise InvalidRequest(
                    f"{batch.input_file_id} has no uploaded file yet", param="input_file_id"
                )
            lines = line_count(record)
            if lines is not None and lines > self.limits.max_rows:
                raise InvalidRequest(
                    f"{batch.input_file_id} holds {lines} requests; a batch may hold at most "
                    f"{self.limits.max_rows}",
                    param="input_file_id",
                )
        if await self.store.count_open_batches(tenant=batch.tenant) >= self.limits.max_open:
            # a retried create whose first attempt filled the quota gets its batch back
            retried = await self._open_with_key(batch)
            if retried is not None:
                return retried, False
            raise QueueFull(
                f"too many open batches: at most {self.limits.max_open} may be open at once; "
                "wait for one to finish"
            )
        stored, created = await self.store.insert_batch(batch)
        if created:
            log.info(
                "batch %s created (tenant=%s dialect=%s)", batch.id, batch.tenant, batch.dialect
            )
            for listener in self._on_created:
                listener()
        return stored, created

    async def _open_with_key(self, batch: Batch) -> Batch | None:
        if batch.idempotency_key is None:
            return None
        open_batches = await self.store.list_batches(
            BatchFilter(
                tenant=batch.tenant,
                dialect=None,
                limit=self.limits.max_open + 1,
                states=frozenset(JobState) - TERMINAL_STATES,
            )
        )
        return next((b for b in open_batches if b.idempotency_key == batch.idempotency_key), None)

    async def get(self, batch_id: str, *, tenant: str | None) -> Batch:
        batch = await self.store.get_batch(batch_id, tenant=tenant)
        if batch is None:
            raise NotFound(f"batch {batch_id} not found", param="batch_id")
        return batch

    async def list(
        self,
        *,
        tenant: str | None,
        dialect: str | None,
        limit: int = 20,
        after: str | None = None,
        states: frozenset[JobState] | None = None,
    ) -> list[Batch]:
        return await self.store.list_batches(
            BatchFilter(tenant=tenant, dialect=dialect, limit=limit, after=after, states=states)
        )

    async def counts(self, batch: Batch) -> BatchCounts:
        """The batch's row counts: frozen once it ended, live before."""
        if batch.counts is not None:
            return batch.counts
        if batch.state is JobState.VALIDATING:
            return BatchCounts()
        return await self.store.batch_counts(tenant=batch.tenant, batch_id=batch.id)

    async def cancel(self, batch_id: str, *, tenant: str | None) -> Batch:
        """Ask the runner to stop the batch; it ends ``cancelled`` with what finished."""
        for _ in range(5):
            batch = await self.get(batch_id, tenant=tenant)
            if batch.state in (JobState.CANCELLING, JobState.CANCELLED):
                return batch
            if batch.state not in CANCELLABLE:
                raise Conflict(
                    f"batch {batch_id} is already {batch.state.value} and cannot be cancelled",
                    param="batch_id",
                )
            now = self.clock()
            cancelling = batch.evolve(
                state=JobState.CANCELLING,
                final_state=JobState.CANCELLED,
                cancelling_at=now,
                updated_at=now,
            )
            if await self.store.update_batch(cancelling, expect=batch.state):
                log.info("batch %s cancelling (was %s)", batch_id, batch.state.value)
                await self._stop_rows(cancelling, JobState.CANCELLED, CANCELLED_ROW)
                return cancelling
        raise Conflict(f"batch {batch_id} changed while it was being cancelled; try again")

    async def delete(self, batch_id: str, *, tenant: str) -> Batch:
        """Stop the batch if it runs, then remove it and its rows (its outputs stay)."""
        batch = await self.get(batch_id, tenant=tenant)
        if not batch.state.terminal:
            await self._stop_rows(batch, JobState.CANCELLED, CANCELLED_ROW)
        await self.store.delete_batch(batch_id, tenant=tenant)
        log.info("batch %s deleted (was %s)", batch_id, batch.state.value)
        return batch

    # -- what the runner calls ----------------------------------------------------

    async def step(self, batch: Batch, *, renew: Renew) -> Batch | None:
        """Take the batch one step on; ``renew`` extends the lease.

        Returns the batch as the step left it when the step moved it to another state
        that is not terminal (validating to queued, queued or running to finalizing),
        so that the runner can take the next step at once; else None.
        """
        moved: Batch | None = None
        if batch.state is JobState.VALIDATING:
            await self._validator.validate(batch, renew)
            moved = await self.store.get_batch(batch.id, tenant=batch.tenant)
        elif batch.state in (JobState.QUEUED, JobState.RUNNING):
            moved = await self._watch(batch)
        elif batch.state in (JobState.CANCELLING, JobState.FINALIZING):
            await self._finalize(batch, renew)
        if moved is None or moved.state is batch.state or moved.state.terminal:
            return None
        return moved

    async def fail(self, batch_id: str, *, tenant: str, reason: str) -> Batch | None:
        """End a batch that cannot be moved on (its steps keep failing) with ``reason``.

        Rows that have not ended are cancelled. A batch being cancelled ends
        ``cancelled``, every other one ``failed``; both carry ``reason`` as their error.
        Only the state, the error and the end are written, over the stored record, so
        whatever made the steps fail is not written again. Returns the ended batch, or
        None when it had already ended or is gone.
        """
        error = JobError("internal_error", reason)
        for _ in range(5):
            batch = await self.store.get_batch(batch_id, tenant=tenant)
            if batch is None or batch.state.terminal:
                return None
            if batch.state is JobState.CANCELLING:
                await self._stop_rows(batch, JobState.CANCELLED, CANCELLED_ROW)
            else:
                row_error = JobError("batch_failed", f"the batch failed: {reason}")
                await self._stop_rows(batch, JobState.CANCELLED, row_error)
            if batch.state is JobState.VALIDATING:
                counts = BatchCounts()
            else:
                counts = await self.store.batch_counts(tenant=batch.tenant, batch_id=batch.id)
            final = JobState.CANCELLED if batch.state is JobState.CANCELLING else JobState.FAILED
            ended = batch.evolve(state=final, error=error, counts=counts, finished_at=self.clock())
            if await self._transition(batch, ended):
                log.warning("batch %s %s: %s", batch.id, final.value, reason)
                return ended
        return None

    async def _transition(self, batch: Batch, new: Batch) -> bool:
        check_transition(batch.state, new.state)
        done = await self.store.update_batch(
            new.evolve(updated_at=self.clock()), expect=batch.state
        )
        if done:
            log.info("batch %s %s -> %s", batch.id, batch.state.value, new.state.value)
        return done

    # queued / running -------------------------------------------------------------

    async def _watch(self, batch: Batch) -> Batch | None:
        """Release rows a crash left unreleased, end the batch's run once no row is
        active (or its window ran out); return the batch if this moved it on."""
        now = self.clock()
        if batch.state is JobState.QUEUED:
            # rows left unreleased by a crash right after validation
            await self.store.release_rows(tenant=batch.tenant, batch_id=batch.id)
        if now >= batch.expires_at:
            expiring = batch.evolve(
                state=JobState.FINALIZING, final_state=JobState.EXPIRED, finalizing_at=now
            )
            if not await self._transition(batch, expiring):
                return None
            await self._stop_rows(expiring, JobState.EXPIRED, EXPIRED_ROW)
            return expiring
        counts = await self.store.batch_counts(tenant=batch.tenant, batch_id=batch.id)
        if counts.active == 0:
            finalizing = batch.evolve(
                state=JobState.FINALIZING,
                final_state=JobState.SUCCEEDED,
                started_at=batch.started_at or now,
                finalizing_at=now,
            )
            return finalizing if await self._transition(batch, finalizing) else None
        if batch.state is JobState.QUEUED and (counts.running or counts.done):
            running = batch.evolve(state=JobState.RUNNING, started_at=now)
            return running if await self._transition(batch, running) else None
        return None

    async def _stop_rows(self, batch: Batch, state: JobState, error: JobError) -> None:
        """End the rows that have not run, and abort the running ones."""
        running = await self.store.batch_rows(
            RowFilter(
                tenant=batch.tenant,
                batch_id=batch.id,
                after_line=0,
                limit=CHUNK,
                states=frozenset({JobState.RUNNING}),
            )
        )
        stopped = await self.store.finish_rows(
            Ending(state, error), tenant=batch.tenant, batch_id=batch.id, now=self.clock()
        )
        for row in running:
            self.events.job_cancelled(row.id)
        if stopped:
            log.info("batch %s: %d rows %s", batch.id, stopped, state.value)

    # finalizing / cancelling ------------------------------------------------------------

    async def _finalize(self, batch: Batch, renew: Renew) -> None:
        """Write the result and error files from the stored rows, then end the batch."""
        if batch.state is JobState.CANCELLING:
            # rows a crash left behind between the cancel and its sweep
            await self._stop_rows(batch, JobState.CANCELLED, CANCELLED_ROW)
        fmt = self.formats[batch.dialect]
        results, failures = fmt.output_files(batch)
        results_key = blob_key(batch.tenant, results.record_id, results.name)
        errors_key = blob_key(batch.tenant, failures.record_id, failures.name)
        async with self.blobs.writer(results_key) as out, self.blobs.writer(errors_key) as err:
            after = 0
            while page := await self.store.batch_rows(
                RowFilter(tenant=batch.tenant, batch_id=batch.id, after_line=after, limit=CHUNK)
            ):
                for row in page:
                    if row.state is JobState.SUCCEEDED:
                        await out.write(_dumps(fmt.result_line(row, batch)))
                    else:
                        await err.write(_dumps(fmt.error_line(row, batch)))
                after = page[-1].batch_line or 0
                if not await renew():
                    await out.discard()
                    await err.discard()
                    return
        counts = await self.store.batch_counts(tenant=batch.tenant, batch_id=batch.id)
        now = self.clock()
        records, published = fmt.publish(batch, counts, (out.size, err.size), now)
        records = with_output_expiry(batch, records)
        kept = {(r.id, name) for r in records for name in file_names(r)}
        for target, key in ((results, results_key), (failures, errors_key)):
            if (target.record_id, target.name) not in kept:
                await self.blobs.delete(key)
        for record in records:
            if await self.store.insert_file(record) is None:
                await self.store.update_file(record)
        final = batch.final_state or JobState.SUCCEEDED
        ended = published.evolve(state=final, counts=counts, finished_at=now)
        await self._transition(batch, ended)
