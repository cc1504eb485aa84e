"""The webhook part of the SQL store (:class:`~inferq.core.webhooks.WebhookStore`).

The outbox itself is written by triggers (``migrations/0005_webhooks.sql``) in the
transaction of each terminal change; this module reads it, fans it out and runs the
deliveries' leases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from inferq.core.states import JobState
from inferq.core.webhooks import Attempt, Claimed, Delivery, Endpoint, OutboxEntry
from inferq.store.executor import Executor, Params, Steps, count, many
from inferq.store.rows import Row

_DELIVERY = (
    "id", "endpoint_id", "tenant", "event_id", "event_type", "subject_id", "event_at",
    "state", "attempts", "next_at", "last_at", "last_status", "last_error", "delivered_at",
)  # fmt: skip
#: the fields a new delivery is stored with (the rest start at their defaults)
_INSERTED = (*_DELIVERY[:7], "next_at")

E = TypeVar("E", bound=Executor)


class SqlWebhooks(Generic[E]):
    """Endpoints, the outbox and deliveries over the executor ``db``."""

    db: E

    async def insert_endpoint(self, endpoint: Endpoint) -> None:
        params = {
            "id": endpoint.id,
            "tenant": endpoint.tenant,
            "url": endpoint.url,
            "events": json.dumps(list(endpoint.events)),
            "secret": endpoint.secret,
            "created_at": endpoint.created_at,
        }
        await self.db.execute("insert_webhook_endpoint", params)

    async def list_endpoints(self, *, tenant: str | None) -> list[Endpoint]:
        found = await self.db.fetch_all("list_webhook_endpoints", {"tenant": tenant})
        return [_endpoint(r) for r in found]

    async def delete_endpoint(self, endpoint_id: str, *, tenant: str | None) -> bool:
        return await self.db.atomic(_delete_endpoint({"id": endpoint_id, "tenant": tenant}))

    async def outbox(self, *, limit: int) -> list[OutboxEntry]:
        return [_entry(r) for r in await self.db.fetch_all("webhook_outbox", {"limit": limit})]

    async def fan_out(self, entry: OutboxEntry, deliveries: Sequence[Delivery]) -> None:
        await self.db.atomic(_fan_out(entry, deliveries))

    async def claim_deliveries(
        self, *, owner: str, now: float, until: float, limit: int
    ) -> list[Claimed]:
        params = {"owner": owner, "now": now, "until": until, "limit": limit}
        found = await self.db.atomic(_claim(params))
        return [Claimed(delivery=_delivery(r), url=r["url"], secret=r["secret"]) for r in found]

    async def record_attempt(self, attempt: Attempt) -> bool:
        params = {
            "id": attempt.delivery_id,
            "owner": attempt.owner,
            "at": attempt.at,
            "state": attempt.state,
            "next_at": attempt.next_at,
            "status": attempt.status,
            "error": attempt.error,
        }
        return await self.db.execute("record_webhook_attempt", params) > 0

    async def list_deliveries(
        self, *, endpoint_id: str, tenant: str | None, limit: int
    ) -> list[Delivery]:
        params = {"endpoint_id": endpoint_id, "tenant": tenant, "limit": limit}
        return [_delivery(r) for r in await self.db.fetch_all("list_webhook_deliveries", params)]


def _delete_endpoint(params: Params) -> Steps[bool]:
    if (yield count("delete_webhook_endpoint", params)) == 0:
        return False
    yield count("delete_webhook_deliveries", params)
    return True


def _fan_out(entry: OutboxEntry, deliveries: Sequence[Delivery]) -> Steps[None]:
    for d in deliveries:
        yield count("insert_webhook_delivery", _delivery_params(d))
    yield count("delete_webhook_outbox_entry", {"seq": entry.seq})


def _claim(params: Params) -> Steps[list[Row]]:
    """Lease the due deliveries, then read them with their endpoints (the lease's owner
    and end name this claim's rows)."""
    if (yield count("claim_webhook_deliveries", params)) == 0:
        return []
    rows: list[Row] = yield many("claimed_webhook_deliveries", params)
    return rows


def _delivery_params(d: Delivery) -> dict[str, Any]:
    return {name: getattr(d, name) for name in _INSERTED}


def _endpoint(row: Row) -> Endpoint:
    events = row["events"]
    return Endpoint(
        id=row["id"],
        tenant=row["tenant"],
        url=row["url"],
        events=tuple(json.loads(events) if isinstance(events, str) else events),
        secret=row["secret"],
        created_at=row["created_at"],
    )


def _entry(row: Row) -> OutboxEntry:
    return OutboxEntry(
        seq=int(row["seq"]),
        id=row["id"],
        tenant=row["tenant"],
        source=row["source"],
        subject_id=row["subject_id"],
        origin=row["origin"],
        state=JobState(row["state"]),
        created_at=float(row["created_at"]),
    )


def _delivery(row: Row) -> Delivery:
    return Delivery(**{name: row[name] for name in _DELIVERY})
