"""Request and token limits per key and per tenant, counted in the store.

A key may have its own requests per minute (``rpm``) and tokens per minute (``tpm``);
keys without their own get the server's defaults (``INFERQ_DEFAULT_RPM``,
``INFERQ_DEFAULT_TPM``; none unless set). A tenant may have limits too, which all its
keys share. Each limit is a bucket of one minute's allowance that refills steadily
(GCRA, the generic cell rate algorithm): a key of ``--rpm 600`` may send 600 requests
at once and then one every 100 ms. A bucket is one row in the store, holding the time
at which it would be full again, so every API process of a fleet spends the same one.

Every request of a limited key spends one request; a request with a JSON body also
spends its estimated tokens (the body's text at four characters a token, plus the
output it asks for at most), as OpenAI counts them at admission. A request that
would overdraw any of its buckets spends nothing and is refused
(:class:`RateLimitExceeded`, a 429 with ``Retry-After``). The API layer renders the
state of the key's tightest buckets as OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inferq.core.errors import InvalidRequest, QueueFull
from inferq.core.lookups import TimedLookups
from inferq.core.models import ApiKey
from inferq.core.records import record

#: a bucket's allowance is one minute's worth
WINDOW = 60.0
#: the body fields that bound a request's output, in every dialect's spelling
OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens")
#: characters per token of the admission estimate
CHARS_PER_TOKEN = 4


@record
class Limits:
    """Requests and tokens per minute (None: no limit)."""

    rpm: int | None = None
    tpm: int | None = None

    def __or__(self, fallback: Limits) -> Limits:
        """These limits, each missing one taken from ``fallback``."""
        return Limits(
            self.rpm if self.rpm is not None else fallback.rpm,
            self.tpm if self.tpm is not None else fallback.tpm,
        )

    @property
    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None


def check_limit(value: int | None, name: str) -> int | None:
    """A limit is a positive whole number, or None (0 clears it)."""
    if value is None or value == 0:
        return None
    if value < 0 or value > 10**12:
        raise InvalidRequest(f"{name} must be between 1 and 10^12 (0: no limit)", param=name)
    return value


@record(kw_only=True)
class Demand:
    """What a request takes from one bucket."""

    #: the bucket: ``key:<id>:requests``, ``tenant:<name>:tokens``, …
    subject: str
    #: its allowance per minute
    limit: int
    #: what this request takes (at most the whole allowance)
    cost: int
    #: ``requests`` or ``tokens`` (or ``launches``)
    kind: str
    #: the allowance is ``limit`` per this many seconds
    window: float = WINDOW


@record
class Bucket:
    """A bucket after a request: what the ``x-ratelimit-*`` headers say."""

    kind: str
    limit: int
    remaining: int
    #: seconds until it is full again
    reset: float


@record
class Verdict:
    allowed: bool
    #: seconds until the request would fit (0 when allowed)
    retry_after: float
    #: the tightest bucket of each kind (requests, tokens)
    buckets: tuple[Bucket, ...]
    #: the kinds of the buckets that had no room (none when allowed)
    refused: tuple[str, ...] = ()


def decide(
    demands: Sequence[Demand], full_at: Mapping[str, float], now: float
) -> tuple[Verdict, dict[str, float]]:
    """Whether every bucket has room for its demand (GCRA), and the buckets' new
    ``full_at`` times (none changed when refused).

    ``full_at`` holds each known bucket's time of being full again; a bucket not in it
    is full.
    """
    level = {d.subject: max(full_at.get(d.subject, now), now) - now for d in demands}
    wanted = {
        d.subject: level[d.subject] + min(d.cost, d.limit) * d.window / d.limit for d in demands
    }
    refused = [d for d in demands if wanted[d.subject] - d.window > 1e-9]
    if not refused:
        level = wanted
    buckets = [
        Bucket(
            d.kind,
            d.limit,
            max(0, math.floor((d.window - level[d.subject]) * d.limit / d.window + 1e-9)),
            level[d.subject],
        )
        for d in demands
    ]
    wait = max((wanted[d.subject] - d.window for d in refused), default=0.0)
    verdict = Verdict(
        not refused, wait, _tightest(buckets), tuple(sorted({d.kind for d in refused}))
    )
    return verdict, ({} if refused else {s: now + v for s, v in level.items()})


def _tightest(buckets: Sequence[Bucket]) -> tuple[Bucket, ...]:
    """The bucket of each kind with the least room left."""
    best: dict[str, Bucket] = {}
    for b in buckets:
        if b.kind not in best or b.remaining < best[b.kind].remaining:
            best[b.kind] = b
    return tuple(best[k] for k in ("requests", "tokens") if k in best)


class RateLimitExceeded(QueueFull):
    """Rate limit reached; retry later."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, verdict: Verdict) -> None:
        super().__init__(message, retry_after=max(1.0, math.ceil(verdict.retry_after)))
        self.verdict = verdict


class Overloaded(QueueFull):
    """The server has more queued work than it takes; retry later."""

    code = "overloaded"


@record
class QueueBounds:
    """How much waiting work a submit may join (None: no bound). Batch rows are bounded
    by their batch limits instead; sync requests count, as they queue too."""

    #: queued jobs of one tenant (``INFERQ_MAX_QUEUED_PER_TENANT``): a 429 past it
    per_tenant: int | None = None
    #: queued jobs of every tenant (``INFERQ_MAX_QUEUED``): a 503 past it
    total: int | None = None
    #: what Retry-After says when a bound refuses (seconds)
    retry_after: float = 2.0


class QueueCounts(Protocol):
    async def count_queued(self, *, tenant: str | None, limit: int) -> int:
        """Queued jobs that are not batch rows (of ``tenant``, or of every tenant),
        counted up to ``limit`` (so the count costs at most ``limit`` index entries)."""


async def check_queue(store: QueueCounts, bounds: QueueBounds, tenant: str) -> None:
    """Refuse a submit that would queue past a bound: :class:`QueueFull` (429) for the
    tenant's, :class:`Overloaded` (503) for the server's. Concurrent submits may pass
    a bound together by as many as run at once."""
    per_tenant, total = bounds.per_tenant, bounds.total
    if per_tenant is not None and await store.count_queued(tenant=tenant, limit=per_tenant) >= (
        per_tenant
    ):
        raise QueueFull(
            f"the tenant has {per_tenant} jobs queued, the most it may; retry when some have run",
            retry_after=bounds.retry_after,
        )
    if total is not None and await store.count_queued(tenant=None, limit=total) >= total:
        raise Overloaded(
            "the server has more queued work than it takes now; retry later",
            retry_after=bounds.retry_after,
        )


#: Unstructured's documented limit: a tenant's workflow jobs launched at least 1 s apart
LAUNCH_SPACING = 1.0


async def space_launches(store: RateStore, tenant: str, *, now: float, spacing: float) -> None:
    """Refuse (429) a workflow job launched less than ``spacing`` seconds after the
    tenant's last one, in every process of a fleet (a bucket of one launch)."""
    launch = Demand(
        subject=f"tenant:{tenant}:launches", limit=1, cost=1, kind="launches", window=spacing
    )
    verdict = await store.take_rates([launch], now=now)
    if not verdict.allowed:
        raise RateLimitExceeded(
            f"workflow jobs must be launched at least {spacing:g} s apart; retry shortly",
            verdict=verdict,
        )


class RateStore(Protocol):
    """The buckets and the tenants' limits, in the store."""

    async def take_rates(self, demands: Sequence[Demand], *, now: float) -> Verdict:
        """Read the demands' buckets (locked), :func:`decide`, and keep the new times
        when allowed: all in one transaction."""

    async def tenant_limits(self, tenant: str) -> Limits:
        """The limits shared by all the tenant's keys."""

    async def set_tenant_limits(self, tenant: str, limits: Limits) -> None:
        """Set (or, with None, clear) the tenant's limits."""

    async def set_key_limits(self, id_or_name: str, limits: Limits) -> ApiKey | None:
        """Set the key's own limits; None when there is no such key."""


def estimate_tokens(body: Any) -> int:
    """A request's tokens at admission: its text at four characters a token, plus the
    output it asks for at most (any of :data:`OUTPUT_FIELDS`, at any depth)."""
    chars = 0
    output = 0
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                if k in OUTPUT_FIELDS and isinstance(v, int) and not isinstance(v, bool):
                    output = max(output, v)
                else:
                    stack.append(v)
        elif isinstance(value, list):
            stack.extend(value)
    return math.ceil(chars / CHARS_PER_TOKEN) + max(output, 0)


@dataclass(eq=False)
class RateLimiter:
    """Admits a key's requests against its buckets and its tenant's."""

    store: RateStore
    #: the limits of a key that sets none
    defaults: Limits = field(default_factory=Limits)
    #: how long a tenant's limits, once read, are trusted
    cache_seconds: float = 2.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        # each tenant's limits, read once for the requests that miss together
        self._tenants: TimedLookups[Limits] = TimedLookups(self.cache_seconds, clock=self.clock)

    def key_limits(self, key: ApiKey) -> Limits:
        return Limits(key.rpm, key.tpm) | self.defaults

    async def _tenant(self, tenant: str) -> Limits:
        limits = await self._tenants.get(tenant, self.store.tenant_limits)
        return limits if limits is not None else Limits()  # the store always has an answer

    async def needs_tokens(self, key: ApiKey) -> bool:
        """Whether a request of this key spends tokens (so its body must be read)."""
        return (
            self.key_limits(key).tpm is not None or (await self._tenant(key.tenant)).tpm is not None
        )

    async def admit(self, key: ApiKey, *, tokens: int = 0) -> Verdict | None:
        """Spend one request and ``tokens`` of the key's and its tenant's buckets; None
        when neither has a limit. Raises :class:`RateLimitExceeded` when one is spent."""
        now = self.clock()
        own, tenants = self.key_limits(key), await self._tenant(key.tenant)
        if not (own.any or tenants.any):
            return None
        demands = [
            *_demands(f"key:{key.id}", own, tokens),
            *_demands(f"tenant:{key.tenant}", tenants, tokens),
        ]
        verdict = await self.store.take_rates(demands, now=now)
        if not verdict.allowed:
            raise RateLimitExceeded(
                f"rate limit reached for {' and '.join(verdict.refused)} per minute; "
                f"retry in {max(1, math.ceil(verdict.retry_after))} s",
                verdict=verdict,
            )
        return verdict


def _demands(prefix: str, limits: Limits, tokens: int) -> list[Demand]:
    found = []
    if limits.rpm is not None:
        found.append(
            Demand(subject=f"{prefix}:requests", limit=limits.rpm, cost=1, kind="requests")
        )
    if limits.tpm is not None:
        found.append(
            Demand(subject=f"{prefix}:tokens", limit=limits.tpm, cost=tokens, kind="tokens")
        )
    return found
