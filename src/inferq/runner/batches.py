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
from inferq.runner.retry import Retries, RetryPolicy

log = logging.getLogger("inferq.batches")


#: the longest pause between two turns while turns fail (the store is away)
LOOP_PAUSE_CAP = 30.0
#: open records read per store round trip
PAGE = 100


class BatchRunner:
    def __init__(
        self,
        *,
        batches: BatchService,
        owner: str,
        lease_seconds: float = 30.0,
        interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.batches = batches
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.clock = clock
        self.retries = Retries(retry)
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
        failures = 0
        while True:
            try:
                await self.turn()
            except Exception:
                # the store is down or unreachable: say so once, then wait longer each time
                failures += 1
                if failures == 1:
                    log.exception("batch runner turn failed; retrying")
                else:
                    log.debug("batch runner turn failed again (%d in a row)", failures)
            else:
                if failures:
                    log.info("batch runner turns work again after %d failures", failures)
                failures = 0
            pause = (
                min(LOOP_PAUSE_CAP, self.retries.policy.delay(failures))
                if failures
                else self.interval
            )
            await wait_event(self._wake, pause)
            self._wake.clear()

    async def turn(self) -> int:
        """Step every open batch once; return how many were stepped."""
        store = self.batches.store
        stepped = 0
        after = 0
        self.retries.prune(self.clock())
        while True:
            page = await store.active_batches(
                now=self.clock(), limit=PAGE, workflows=False, after=after
            )
            for batch in page:
                if batch.dialect not in self.batches.formats:
                    continue  # no format for it in this process
                if not self.retries.due(batch.id, self.clock()):
                    continue
                try:
                    done = await self._step(batch)
                except Exception as exc:
                    await self._failed(batch, exc)
                    continue
                if self.retries.succeeded(batch.id):
                    log.info("batch %s (%s): its step works again", batch.id, batch.state.value)
                stepped += done
            if len(page) < PAGE:
                return stepped
            after = page[-1].seq

    async def _step(self, batch: Batch) -> bool:
        """Step one batch; False when another runner has it or it has ended."""
        store = self.batches.store
        if batch.state in (JobState.QUEUED, JobState.RUNNING):
            # watching takes only reads and compare-and-set transitions: no lease,
            # so an idle turn writes nothing
            await self.batches.step(batch, renew=self._no_renew)
            return True
        if not await self._lease(batch):
            return False
        failed = False
        try:
            current = await store.get_batch(batch.id, tenant=batch.tenant)
            if current is None or current.state.terminal:
                return False
            await self.batches.step(current, renew=functools.partial(self._lease, current))
            return True
        except Exception:
            failed = True  # _failed holds the lease for the wait before the next try
            raise
        finally:
            if not failed:
                # let the next turn (of any runner) pick it up without waiting
                await store.lease_batch(
                    batch, owner=self.owner, now=self.clock(), until=self.clock() - 1
                )

    async def _failed(self, batch: Batch, exc: Exception) -> None:
        """A step of ``batch`` raised: back off, or end the batch after too many."""
        now = self.clock()
        failure = self.retries.failed(batch.id, batch.state.value, now)
        if failure.give_up:
            reason = (
                f"the batch could not be moved on while {batch.state.value}: "
                f"{failure.count} unexpected errors in a row, the last "
                f"{type(exc).__name__}; see the server log"
            )
            if failure.count == self.retries.policy.give_up_after:
                log.error("batch %s: %s", batch.id, reason, exc_info=exc)
            try:
                await self.batches.fail(batch.id, tenant=batch.tenant, reason=reason)
            except Exception:
                if failure.count == self.retries.policy.give_up_after:
                    log.warning("batch %s: could not be failed; trying again later", batch.id,
                                exc_info=True)  # fmt: skip
            else:
                self.retries.forget(batch.id)
                with contextlib.suppress(Exception):
                    await self.batches.store.lease_batch(
                        batch, owner=self.owner, now=now, until=now - 1
                    )
                return
        elif failure.first_in_state:
            log.warning(
                "batch %s (%s): its step failed; retrying in %.0f s (at most %d tries)",
                batch.id, batch.state.value, failure.retry_at - now,
                self.retries.policy.give_up_after, exc_info=exc,
            )  # fmt: skip
        else:
            log.debug("batch %s (%s): its step failed again (%d in a row): %s",
                      batch.id, batch.state.value, failure.count, type(exc).__name__)  # fmt: skip
        # the lease, held until the retry, keeps every runner of the fleet off it till then
        with contextlib.suppress(Exception):
            await self.batches.store.lease_batch(
                batch, owner=self.owner, now=now, until=failure.retry_at
            )

    @staticmethod
    async def _no_renew() -> bool:
        return True

    async def _lease(self, batch: Batch) -> bool:
        now = self.clock()
        return await self.batches.store.lease_batch(
            batch, owner=self.owner, now=now, until=now + self.lease_seconds
        )
