"""Webhooks in the memory store: endpoints, the outbox and deliveries in dictionaries.

The SQL stores write the outbox from triggers; here the tables of jobs and batches are
:class:`Watched` dictionaries that call the same rule on every write, under the store's
lock like the write itself, so the fake keeps the contract's "written with the change".
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from inferq.core.models import Batch, Job
from inferq.core.states import JobState, ServiceClass
from inferq.core.webhooks import (
    BATCH,
    JOB,
    PENDING,
    Attempt,
    Claimed,
    Delivery,
    Endpoint,
    OutboxEntry,
)

K = TypeVar("K")
V = TypeVar("V")


class Watched(dict[K, V], Generic[K, V]):
    """A dictionary that tells ``on_write(old, new)`` of every item set (a trigger)."""

    def __init__(self, on_write: Callable[[V | None, V], None]) -> None:
        super().__init__()
        self.on_write = on_write

    def __setitem__(self, key: K, value: V) -> None:
        old = self.get(key)
        super().__setitem__(key, value)
        self.on_write(old, value)


class MemoryWebhooks:
    """The :class:`~inferq.core.webhooks.WebhookStore` port in dictionaries."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.outbox_entries: dict[int, OutboxEntry] = {}
        self.deliveries: dict[str, Delivery] = {}
        self._delivery_lease: dict[str, tuple[str, float]] = {}
        self._outbox_seq = itertools.count(1)

    # -- the triggers -------------------------------------------------------------------

    def job_written(self, old: Job | None, new: Job) -> None:
        if (
            old is not None
            and _ended(old.state, new.state)
            and new.batch_id is None
            and new.service_class is not ServiceClass.INTERACTIVE
        ):
            self._record(new.tenant, JOB, new.id, new.origin, new.state)

    def batch_written(self, old: Batch | None, new: Batch) -> None:
        if old is not None and _ended(old.state, new.state):
            self._record(new.tenant, BATCH, new.id, new.dialect, new.state)

    def _record(self, tenant: str, source: str, subject: str, origin: str, state: JobState) -> None:
        if not any(e.tenant == tenant for e in self.endpoints.values()):
            return
        seq = next(self._outbox_seq)
        self.outbox_entries[seq] = OutboxEntry(
            seq=seq,
            id="evt_" + uuid.uuid4().hex[:24],
            tenant=tenant,
            source=source,
            subject_id=subject,
            origin=origin,
            state=state,
            created_at=time.time(),
        )

    # -- the port ------------------------------------------------------------------------

    async def insert_endpoint(self, endpoint: Endpoint) -> None:
        self.endpoints[endpoint.id] = endpoint

    async def list_endpoints(self, *, tenant: str | None) -> list[Endpoint]:
        found = [e for e in self.endpoints.values() if tenant is None or e.tenant == tenant]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    async def delete_endpoint(self, endpoint_id: str, *, tenant: str | None) -> bool:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None or (tenant is not None and endpoint.tenant != tenant):
            return False
        del self.endpoints[endpoint_id]
        for d in [d for d in self.deliveries.values() if d.endpoint_id == endpoint_id]:
            del self.deliveries[d.id]
        return True

    async def outbox(self, *, limit: int) -> list[OutboxEntry]:
        return [self.outbox_entries[seq] for seq in sorted(self.outbox_entries)[:limit]]

    async def fan_out(self, entry: OutboxEntry, deliveries: Sequence[Delivery]) -> None:
        taken = {(d.event_id, d.endpoint_id) for d in self.deliveries.values()}
        for d in deliveries:
            if (d.event_id, d.endpoint_id) not in taken:
                self.deliveries[d.id] = d
        self.outbox_entries.pop(entry.seq, None)

    async def claim_deliveries(
        self, *, owner: str, now: float, until: float, limit: int
    ) -> list[Claimed]:
        due = [
            d
            for d in self.deliveries.values()
            if d.state == PENDING
            and d.next_at <= now
            and self._delivery_lease.get(d.id, ("", 0.0))[1] < now
            and d.endpoint_id in self.endpoints
        ]
        due.sort(key=lambda d: d.next_at)
        claimed = []
        for d in due[:limit]:
            self._delivery_lease[d.id] = (owner, until)
            endpoint = self.endpoints[d.endpoint_id]
            claimed.append(Claimed(delivery=d, url=endpoint.url, secret=endpoint.secret))
        return claimed

    async def record_attempt(self, attempt: Attempt) -> bool:
        d = self.deliveries.get(attempt.delivery_id)
        lease = self._delivery_lease.get(attempt.delivery_id)
        if d is None or d.state != PENDING or lease is None or lease[0] != attempt.owner:
            return False
        del self._delivery_lease[attempt.delivery_id]
        self.deliveries[d.id] = d.evolve(
            state=attempt.state,
            attempts=d.attempts + 1,
            next_at=attempt.next_at,
            last_at=attempt.at,
            last_status=attempt.status,
            last_error=attempt.error,
            delivered_at=attempt.at if attempt.state == "delivered" else d.delivered_at,
        )
        return True

    async def list_deliveries(
        self, *, endpoint_id: str, tenant: str | None, limit: int
    ) -> list[Delivery]:
        found = [
            d
            for d in self.deliveries.values()
            if d.endpoint_id == endpoint_id and (tenant is None or d.tenant == tenant)
        ]
        return list(reversed(found))[:limit]


def _ended(before: JobState, after: JobState) -> bool:
    return after.terminal and not before.terminal
