"""The webhook deliverer: fans the outbox out and delivers, at least once.

Each turn (every second, or at once when a job ends here or elsewhere) it

1. turns the outbox's entries into deliveries, one per endpoint that wants the event
   (:func:`~inferq.core.webhooks.deliveries_for`); the store makes a second fan-out of
   an entry (two processes at once) add nothing;
2. claims the due deliveries under a lease, so a fleet sends each attempt once, and
   posts them concurrently (:class:`~inferq.runner.webhook_send.Sender`);
3. records each outcome: delivered, or due again after a backoff with jitter
   (:class:`~inferq.core.webhooks.RetryPolicy`), or failed once the event is older
   than the policy's ``max_age``.

A process killed mid-attempt leaves the delivery leased; the lease runs out and a
deliverer (this one restarted, or another) sends it again with the same webhook-id.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from inferq.core.events import wait_event
from inferq.core.webhooks import (
    DEFAULT_KINDS,
    DELIVERED,
    FAILED,
    PENDING,
    Attempt,
    Claimed,
    EventKinds,
    RetryPolicy,
    WebhookStore,
    deliveries_for,
    jitter,
)
from inferq.runner.background import Background
from inferq.runner.metrics import Metrics
from inferq.runner.webhook_send import Outcome, Sender

log = logging.getLogger("inferq.webhooks")


@dataclass(frozen=True, slots=True)
class DelivererSettings:
    #: seconds between turns when nothing wakes the deliverer
    interval: float = 1.0
    #: deliveries claimed (and posted concurrently) per turn
    batch: int = 16
    #: outbox entries fanned out per turn
    fan_out: int = 200
    #: how long a claim holds a delivery (more than an attempt's timeout)
    lease_seconds: float = 60.0


@dataclass(kw_only=True, eq=False)
class Deliverer(Background):
    store: WebhookStore
    sender: Sender
    kinds: EventKinds = DEFAULT_KINDS
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    settings: DelivererSettings = field(default_factory=DelivererSettings)
    metrics: Metrics | None = None
    owner: str = field(default_factory=lambda: f"deliverer-{uuid.uuid4().hex[:12]}")
    clock: Callable[[], float] = time.time
    rand: Callable[[], float] = jitter

    def __post_init__(self) -> None:
        self._wake = asyncio.Event()
        #: whether any endpoint was registered when last looked (every turn at most
        #: each ``interval``): without one no event is written, so a job's end need not
        #: wake the deliverer (a store read and a claim for every job otherwise)
        self._endpoints = True
        self._looked_at = float("-inf")

    async def stop(self) -> None:
        await super().stop()
        await self.sender.close()

    def wake(self, *_: object) -> None:
        if self._endpoints:
            self._wake.set()

    async def run(self) -> None:
        failing = False
        while True:
            try:
                busy = await self.turn()
            except Exception:
                if not failing:
                    log.exception("webhook deliverer turn failed; retrying")
                failing, busy = True, 0
            else:
                failing = False
            if not busy:
                await wait_event(self._wake, self.settings.interval * (5 if failing else 1))
                self._wake.clear()

    async def turn(self) -> int:
        """Fan out and deliver once; return how much was done (0: idle)."""
        now = time.monotonic()
        if now - self._looked_at >= self.settings.interval:
            self._looked_at = now
            self._endpoints = bool(await self.store.list_endpoints(tenant=None))
        fanned = await self.fan_out()
        sent = await self.deliver()
        return fanned + sent

    async def fan_out(self) -> int:
        entries = await self.store.outbox(limit=self.settings.fan_out)
        if not entries:
            return 0
        endpoints = await self.store.list_endpoints(tenant=None)
        for entry in entries:
            job = None
            if self.kinds.needs_job(entry):
                job = await self.store.get_job(entry.subject_id, tenant=entry.tenant)
            kind, subject = self.kinds.event_type(entry, job), self.kinds.subject_id(entry)
            made = deliveries_for(entry, kind, endpoints, subject_id=subject)
            await self.store.fan_out(entry, made)
        return len(entries)

    async def deliver(self) -> int:
        now = self.clock()
        claimed = await self.store.claim_deliveries(
            owner=self.owner,
            now=now,
            until=now + self.settings.lease_seconds,
            limit=self.settings.batch,
        )
        await asyncio.gather(*(self._attempt(c) for c in claimed))
        return len(claimed)

    async def _attempt(self, claimed: Claimed) -> None:
        d = claimed.delivery
        try:
            outcome = await self.sender.post(
                claimed.url, secret=claimed.secret, webhook_id=d.id, body=d.payload()
            )
        except Exception as exc:  # a bug here must not lose the delivery: retry it
            log.exception("webhook %s: the attempt raised", d.id)
            outcome = Outcome(None, type(exc).__name__)
        now = self.clock()
        if outcome.ok:
            state, next_at = DELIVERED, now
        else:
            due = self.retry.next_at(d.attempts + 1, now=now, event_at=d.event_at, rand=self.rand)
            state, next_at = (FAILED, now) if due is None else (PENDING, due)
        attempt = Attempt(
            delivery_id=d.id,
            owner=self.owner,
            at=now,
            state=state,
            next_at=next_at,
            status=outcome.status,
            error=outcome.error,
        )
        recorded = await self.store.record_attempt(attempt)
        self._count(state)
        if state == DELIVERED:
            log.info("webhook %s (%s %s) delivered to %s", d.id, d.event_type, d.subject_id,
                     d.endpoint_id)  # fmt: skip
        else:
            then = "giving up" if state == FAILED else f"again in {next_at - now:.0f} s"
            why = outcome.error or outcome.status
            log.warning("webhook %s (%s) attempt %d to %s: %s; %s", d.id, d.event_type,
                        d.attempts + 1, d.endpoint_id, why, then)  # fmt: skip
        if not recorded:
            log.info("webhook %s: its lease was lost; another deliverer has it", d.id)

    def _count(self, state: str) -> None:
        if self.metrics is not None:
            outcome = {PENDING: "retried"}.get(state, state)
            self.metrics.webhook_attempts.labels(outcome).inc()
