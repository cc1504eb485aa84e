"""Webhooks: a tenant's endpoints, the events in OpenAI's shape, and the delivery policy.

How an event travels:

1. **The outbox.** When a job or a batch reaches a terminal state, the store writes an
   :class:`OutboxEntry` *in the same transaction* as the state change (a trigger in
   SQLite and PostgreSQL, the same rule in the memory fake), for tenants that have an
   endpoint. Nothing acknowledged can end without its entry, and a crash loses neither.
2. **Fan-out.** The deliverer (:mod:`inferq.runner.webhooks`) turns each entry into one
   :class:`Delivery` per endpoint that subscribed to its event type
   (:meth:`EventKinds.event_type` names it: a hook keyed by the kind of record), and
   removes the entry, in one transaction. A delivery's id is the ``webhook-id`` of
   every attempt, so a receiver can drop duplicates.
3. **Delivery.** Deliverers of the fleet claim due deliveries under a lease (each is
   sent once per attempt, by one process), POST the signed event, and record the
   outcome: delivered, or retried with exponential backoff and jitter
   (:class:`RetryPolicy`) until ``max_age`` has passed since the event, then failed.

Signatures follow Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``), as OpenAI's do, so ``client.webhooks.unwrap`` verifies them.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from inferq.core.errors import InvalidRequest, NotFound
from inferq.core.models import Job
from inferq.core.states import JobState
from inferq.core.work import ChatResult

# -- event types -----------------------------------------------------------------------

#: a batch's end, as OpenAI names it
BATCH_EVENTS: Mapping[JobState, str] = {
    JobState.SUCCEEDED: "batch.completed",
    JobState.FAILED: "batch.failed",
    JobState.CANCELLED: "batch.cancelled",
    JobState.EXPIRED: "batch.expired",
}
#: the end of a queue job or a document workflow job (an expired one has failed)
JOB_EVENTS: Mapping[JobState, str] = {
    JobState.SUCCEEDED: "job.succeeded",
    JobState.FAILED: "job.failed",
    JobState.CANCELLED: "job.cancelled",
    JobState.EXPIRED: "job.failed",
}
#: the end of a background response (OpenAI's Responses API); one that succeeded but
#: stopped at its token limit is ``response.incomplete`` (:func:`response_event`)
RESPONSE_EVENTS: Mapping[JobState, str] = {
    JobState.SUCCEEDED: "response.completed",
    JobState.FAILED: "response.failed",
    JobState.CANCELLED: "response.cancelled",
    JobState.EXPIRED: "response.failed",
}

#: the kinds of record an outbox entry may come from
JOB = "job"
BATCH = "batch"


@dataclass(frozen=True, kw_only=True)
class EventKinds:
    """Which event type the end of a record becomes: the hook the kinds of work plug into.

    ``jobs`` maps a job's ``origin`` (the API that accepted it) to its events, and
    ``batches`` a batch record's ``dialect``; a batch of a dialect not named gets
    :data:`BATCH_EVENTS`, a job of an origin not named (a sync request, a workflow's
    node) none. A new kind of work adds itself with :meth:`with_jobs`.
    """

    jobs: Mapping[str, Mapping[JobState, str]] = field(default_factory=dict)
    batches: Mapping[str, Mapping[JobState, str]] = field(default_factory=dict)
    #: the id a job of an origin is known by to its client, when it is not the job's id
    public_ids: Mapping[str, Callable[[str], str]] = field(default_factory=dict)
    #: the event of a job of an origin, from the job as it ended (its result), where its
    #: state alone does not tell
    by_job: Mapping[str, Callable[[Job], str | None]] = field(default_factory=dict)

    def needs_job(self, entry: OutboxEntry) -> bool:
        """Whether :meth:`event_type` wants the job itself for this entry."""
        return entry.source == JOB and entry.origin in self.by_job

    def event_type(self, entry: OutboxEntry, job: Job | None = None) -> str | None:
        """The event an entry becomes, or None when its kind sends none."""
        if entry.source == BATCH:
            return self.batches.get(entry.origin, BATCH_EVENTS).get(entry.state)
        events = self.jobs.get(entry.origin)
        if events is None:
            return None
        refine = self.by_job.get(entry.origin)
        if refine is not None and job is not None:
            return refine(job)
        return events.get(entry.state)

    def subject_id(self, entry: OutboxEntry) -> str:
        """The event's ``data.id``: the id the client knows the record by."""
        public = self.public_ids.get(entry.origin) if entry.source == JOB else None
        return public(entry.subject_id) if public is not None else entry.subject_id

    def with_jobs(
        self,
        origin: str,
        events: Mapping[JobState, str],
        public_id: Callable[[str], str] | None = None,
        by_job: Callable[[Job], str | None] | None = None,
    ) -> EventKinds:
        """These kinds, and the jobs of ``origin`` sending ``events`` (about the id
        ``public_id`` makes of a job's id; ``by_job`` naming the event from the job)."""
        return dataclasses.replace(
            self,
            jobs={**self.jobs, origin: events},
            public_ids={**self.public_ids, **({origin: public_id} if public_id else {})},
            by_job={**self.by_job, **({origin: by_job} if by_job else {})},
        )

    def known(self) -> frozenset[str]:
        """Every event type an endpoint may subscribe to."""
        every = [BATCH_EVENTS, *self.jobs.values(), *self.batches.values()]
        return frozenset(name for events in every for name in events.values())


def response_event(job: Job) -> str | None:
    """A background response's event: ``response.incomplete`` when it stopped at its
    token limit, as its status then says."""
    if isinstance(job.result, ChatResult) and job.result.finish_reason == "length":
        return "response.incomplete"
    return RESPONSE_EVENTS.get(job.state)


def response_id(job_id: str) -> str:
    """A background response's id (``resp_`` and its job's UUID in hex, as OpenAI's
    Responses API answers it)."""
    return "resp_" + uuid.UUID(job_id).hex


#: the queue jobs (Together's queue, Infera's jobs), document workflow jobs and
#: background responses (jobs of origin ``openai-responses``; sync ones send nothing)
DEFAULT_KINDS = EventKinds(
    jobs={"together": JOB_EVENTS, "infera": JOB_EVENTS},
    batches={"unstructured": JOB_EVENTS},
).with_jobs("openai-responses", RESPONSE_EVENTS, response_id, response_event)


# -- records ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where a tenant's events go, and the secret that signs them."""

    id: str
    tenant: str
    url: str
    #: the event types sent; empty: every one
    events: tuple[str, ...]
    #: ``whsec_`` and the base64 of the key (Standard Webhooks' form); not in the repr
    secret: str = field(repr=False)
    created_at: float

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEntry:
    """A record reached a terminal state: written with the change, read by the fan-out."""

    seq: int
    #: the event's id (``evt_…``), fixed when the entry is written
    id: str
    tenant: str
    #: :data:`JOB` or :data:`BATCH`
    source: str
    #: the job's or batch's id
    subject_id: str
    #: the job's origin or the batch's dialect
    origin: str
    state: JobState
    created_at: float


#: a delivery's states
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One event for one endpoint: its attempts so far and its outcome."""

    #: the ``webhook-id`` of every attempt (``wh_…``)
    id: str
    endpoint_id: str
    tenant: str
    event_id: str
    event_type: str
    subject_id: str
    #: when the event happened (the payload's ``created_at``)
    event_at: float
    state: str = PENDING
    attempts: int = 0
    next_at: float = 0.0
    #: the last attempt: when, the HTTP status (None: no answer), what went wrong
    last_at: float | None = None
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: float | None = None

    def evolve(self, **changes: Any) -> Delivery:
        return dataclasses.replace(self, **changes)

    def payload(self) -> bytes:
        """The event as OpenAI sends it: the same bytes on every attempt."""
        body = {
            "object": "event",
            "id": self.event_id,
            "type": self.event_type,
            "created_at": int(self.event_at),
            "data": {"id": self.subject_id},
        }
        return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A delivery leased to one deliverer, with where it goes."""

    delivery: Delivery
    url: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """The outcome of one attempt, as the deliverer records it."""

    delivery_id: str
    owner: str
    at: float
    #: the delivery's state after it: delivered, pending (again at ``next_at``) or failed
    state: str
    next_at: float
    status: int | None
    error: str | None


# -- the store's part ----------------------------------------------------------------------


class WebhookStore(Protocol):
    """Endpoints, the outbox and the deliveries (the outbox is written by the store
    itself, with each terminal change of a job or batch)."""

    async def insert_endpoint(self, endpoint: Endpoint) -> None:
        """Store a new endpoint."""

    async def list_endpoints(self, *, tenant: str | None) -> list[Endpoint]:
        """The tenant's endpoints (every tenant's for None), oldest first."""

    async def delete_endpoint(self, endpoint_id: str, *, tenant: str | None) -> bool:
        """Delete the endpoint and its deliveries; False when there was none."""

    async def outbox(self, *, limit: int) -> list[OutboxEntry]:
        """The oldest entries not yet fanned out."""

    async def fan_out(self, entry: OutboxEntry, deliveries: Sequence[Delivery]) -> None:
        """In one transaction: store the deliveries (one per endpoint and event at most:
        a second fan-out of the same entry adds nothing) and remove the entry."""

    async def claim_deliveries(
        self, *, owner: str, now: float, until: float, limit: int
    ) -> list[Claimed]:
        """Lease up to ``limit`` pending deliveries that are due, oldest due first."""

    async def record_attempt(self, attempt: Attempt) -> bool:
        """Write an attempt's outcome and release the lease (fenced by the owner)."""

    async def list_deliveries(
        self, *, endpoint_id: str, tenant: str | None, limit: int
    ) -> list[Delivery]:
        """The endpoint's deliveries, newest event first."""

    async def get_job(self, job_id: str, *, tenant: str | None) -> Job | None:
        """The job (read at fan-out by the kinds whose event depends on how it ended)."""


# -- policy ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits a random time up to
    ``base * 2**(n-1)`` (capped), until ``max_age`` after the event."""

    base: float = 5.0
    cap: float = 3600.0
    max_age: float = 72 * 3600.0

    def next_at(
        self, attempts: int, *, now: float, event_at: float, rand: Callable[[], float]
    ) -> float | None:
        """When to try again after ``attempts`` failed tries; None: give up."""
        ceiling = min(self.cap, self.base * 2 ** max(attempts - 1, 0))
        due = now + ceiling * (0.5 + rand() / 2)  # half fixed, half jitter: never at once
        return None if due - event_at > self.max_age else due


def new_secret() -> str:
    """A signing secret in Standard Webhooks' form: ``whsec_`` and 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_url(url: str) -> str:
    """An endpoint URL: http(s), a host, no credentials, no fragment (its address is
    checked at each delivery, where it is resolved)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidRequest(f"{url!r} is not a URL", param="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("the URL must be http:// or https:// with a host", param="url")
    if parts.username or parts.password or parts.fragment:
        raise InvalidRequest("the URL cannot carry credentials or a fragment", param="url")
    if len(url) > 2000 or (port is not None and port == 0):
        raise InvalidRequest("the URL is too long or names port 0", param="url")
    try:
        # as each delivery's resolver will: an empty label, or one over 63 characters
        # once encoded, names no host
        parts.hostname.encode("idna")
    except UnicodeError:
        raise InvalidRequest(
            f"the URL's host {parts.hostname[:100]!r} is not a valid host name", param="url"
        ) from None
    return url


@dataclass(kw_only=True, eq=False)
class WebhookService:
    """What the admin API, the CLI and the console call."""

    store: WebhookStore
    kinds: EventKinds = DEFAULT_KINDS
    clock: Callable[[], float] = time.time

    async def create(self, *, tenant: str, url: str, events: Sequence[str] = ()) -> Endpoint:
        """Register an endpoint; its secret is shown once, here."""
        if not tenant.strip():
            raise InvalidRequest("a tenant is required", param="tenant")
        known = self.kinds.known()
        unknown = sorted(set(events) - known)
        if unknown:
            raise InvalidRequest(
                f"unknown event types {unknown}; known: {sorted(known)}", param="events"
            )
        endpoint = Endpoint(
            id="we_" + uuid.uuid4().hex,
            tenant=tenant,
            url=check_url(url),
            events=tuple(dict.fromkeys(events)),
            secret=new_secret(),
            created_at=self.clock(),
        )
        await self.store.insert_endpoint(endpoint)
        return endpoint

    async def endpoints(self, *, tenant: str | None) -> list[Endpoint]:
        """The tenant's endpoints (every tenant's for None), oldest first."""
        return await self.store.list_endpoints(tenant=tenant)

    async def delete(self, endpoint_id: str, *, tenant: str | None) -> None:
        if not await self.store.delete_endpoint(endpoint_id, tenant=tenant):
            raise NotFound(f"webhook endpoint {endpoint_id} not found", param="endpoint_id")

    async def deliveries(
        self, endpoint_id: str, *, tenant: str | None, limit: int = 50
    ) -> list[Delivery]:
        """The endpoint's delivery history, newest first (the CLI's and the console's)."""
        if not any(e.id == endpoint_id for e in await self.endpoints(tenant=tenant)):
            raise NotFound(f"webhook endpoint {endpoint_id} not found", param="endpoint_id")
        return await self.store.list_deliveries(endpoint_id=endpoint_id, tenant=tenant, limit=limit)


def deliveries_for(
    entry: OutboxEntry,
    event_type: str | None,
    endpoints: Sequence[Endpoint],
    *,
    subject_id: str | None = None,
) -> list[Delivery]:
    """The deliveries an outbox entry becomes: one per endpoint of its tenant that wants it
    (``subject_id``: the event's ``data.id``, the record's own id by default)."""
    if event_type is None:
        return []
    return [
        Delivery(
            id="wh_" + uuid.uuid4().hex,
            endpoint_id=endpoint.id,
            tenant=entry.tenant,
            event_id=entry.id,
            event_type=event_type,
            subject_id=subject_id or entry.subject_id,
            event_at=entry.created_at,
            next_at=entry.created_at,
        )
        for endpoint in endpoints
        if endpoint.tenant == entry.tenant and endpoint.wants(event_type)
    ]


def public(endpoint: Endpoint) -> dict[str, Any]:
    """An endpoint as the API and the CLI show it (never its secret)."""
    return {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "tenant": endpoint.tenant,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "created_at": int(endpoint.created_at),
    }


def delivery_view(d: Delivery) -> dict[str, Any]:
    """A delivery as the API, the CLI and the console show it."""
    return {
        "id": d.id,
        "event_id": d.event_id,
        "type": d.event_type,
        "subject_id": d.subject_id,
        "state": d.state,
        "attempts": d.attempts,
        "next_at": d.next_at if d.state == PENDING else None,
        "last_at": d.last_at,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "delivered_at": d.delivered_at,
    }


def jitter() -> float:
    """A uniform draw in [0, 1) for the backoff (a function, so tests can pin it)."""
    return random.random()
