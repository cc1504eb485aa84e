"""What the batch runner and the workflow runner share: a loop of turns over leased records.

A :class:`RecordRunner` runs :meth:`~RecordRunner.turn` every ``interval`` seconds,
or at once when woken. A turn that fails as a whole (the store is away) is logged
once, and the pause before the next grows up to :data:`LOOP_PAUSE_CAP`.

Records (batches, workflow jobs) carry a bookkeeping lease in the store, so one
runner of the fleet works on a record at a time. One record never stops the others:
when its step raises, :meth:`~RecordRunner.record_failed` logs it (in full once per
record and state), holds its lease through a doubling wait (so no runner of the
fleet tries it meanwhile), and after :attr:`RetryPolicy.give_up_after` failures in a
row ends it through the subclass' :meth:`~RecordRunner.give_up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import TypedDict

from inferq.core.events import wait_event
from inferq.core.models import Batch
from inferq.core.ports import BatchStore
from inferq.runner.background import Background
from inferq.runner.retry import Retries, RetryPolicy

#: the longest pause between two turns while turns fail (the store is away)
LOOP_PAUSE_CAP = 30.0


class RunnerOptions(TypedDict, total=False):
    """The keywords a runner passes on to :class:`RecordRunner` unchanged."""

    lease_seconds: float
    interval: float
    clock: Callable[[], float]
    retry: RetryPolicy | None


class RecordRunner(Background):
    """The loop, the lease and the failure policy of a runner; subclasses step records."""

    #: how the log names one record ("batch", "workflow job")
    noun = "record"
    #: whether the records are document workflow jobs (else batches)
    workflows = False
    #: open records read per store round trip
    page = 100

    def __init__(
        self,
        *,
        store: BatchStore,
        owner: str,
        log: logging.Logger,
        lease_seconds: float = 30.0,
        interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.store = store
        self.owner = owner
        self.log = log
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.clock = clock
        self.retries = Retries(retry)
        self._wake = asyncio.Event()

    # -- the loop -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    @abstractmethod
    async def turn(self) -> int:
        """Step this runner's open records once; return how many were stepped."""

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.turn()
            except Exception:
                # the store is down or unreachable: say so once, then wait longer each time
                failures += 1
                if failures == 1:
                    self.log.exception("%s runner turn failed; retrying", self.noun)
                else:
                    self.log.debug("%s runner turn failed again (%d in a row)", self.noun, failures)
            else:
                if failures:
                    self.log.info(
                        "%s runner turns work again after %d failures", self.noun, failures
                    )
                failures = 0
            pause = (
                min(LOOP_PAUSE_CAP, self.retries.policy.delay(failures))
                if failures
                else self.interval
            )
            await wait_event(self._wake, pause)
            self._wake.clear()

    # -- records and their leases -------------------------------------------------------

    async def open_records(self, now: float, *, after: int = 0) -> list[Batch]:
        """One page of this runner's open records whose lease is free, oldest first."""
        return await self.store.active_batches(
            now=now, limit=self.page, workflows=self.workflows, after=after
        )

    async def lease(self, record: Batch) -> bool:
        now = self.clock()
        return await self.store.lease_batch(
            record, owner=self.owner, now=now, until=now + self.lease_seconds
        )

    async def release(self, record: Batch, *, until: float | None = None) -> None:
        """Give the lease up (or keep it ``until``); a failure here is only logged later,
        by the lease running out."""
        now = self.clock()
        with contextlib.suppress(Exception):
            await self.store.lease_batch(
                record, owner=self.owner, now=now, until=now - 1 if until is None else until
            )

    # -- failures -----------------------------------------------------------------------

    def recovered(self, record: Batch) -> None:
        if self.retries.succeeded(record.id):
            self.log.info("%s %s: works again after failures", self.noun, record.id)

    @abstractmethod
    async def give_up(self, record: Batch, reason: str) -> None:
        """End a record whose steps keep failing (the subclass decides how)."""

    async def record_failed(self, record: Batch, state: str, exc: Exception) -> None:
        """A step of ``record`` raised: back off, or end the record after too many."""
        now = self.clock()
        failure = self.retries.failed(record.id, state, now)
        last = failure.count == self.retries.policy.give_up_after
        if failure.give_up:
            reason = (
                f"the {self.noun} could not be moved on while {state}: {failure.count} "
                f"unexpected errors in a row, the last {type(exc).__name__}; see the server log"
            )
            if last:
                self.log.error("%s %s: %s", self.noun, record.id, reason, exc_info=exc)
            try:
                await self.give_up(record, reason)
            except Exception:
                if last:
                    self.log.warning("%s %s: could not be failed; trying again later",
                                     self.noun, record.id, exc_info=True)  # fmt: skip
            else:
                self.retries.forget(record.id)
                await self.release(record)
                return
        elif failure.first_in_state:
            self.log.warning(
                "%s %s (%s): its step failed; retrying in %.0f s (at most %d tries)",
                self.noun, record.id, state, failure.retry_at - now,
                self.retries.policy.give_up_after, exc_info=exc,
            )  # fmt: skip
        else:
            self.log.debug("%s %s (%s): its step failed again (%d in a row): %s", self.noun,
                           record.id, state, failure.count, type(exc).__name__)  # fmt: skip
        # the lease, held until the retry, keeps every runner of the fleet off it till then
        await self.release(record, until=failure.retry_at)
