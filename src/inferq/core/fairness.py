"""Fair share: which tenant's work a claim takes, when several tenants wait.

Within each service class, tenants with waiting work share the engines in proportion
to their weight (default 1), measured in tokens processed (prompt and output), not in
requests. Each tenant has a *virtual time*: the tokens charged to it divided by its
weight. A claim serves the waiting tenant with the lowest virtual time first (start-time
fair queueing); within a tenant, strict priority then submission order, as without
fairness. Service classes still come first: a tenant's sync request goes before every
tenant's queued jobs, whatever the virtual times.

The token count of a job is known only when it ends, so a claim charges each claimed
job an estimate (the tenant's recent average cost per job) and the worker settles the
difference when the job ends (:meth:`FairShares.settle_shares`): actual tokens for a
job that succeeded, a refund of the estimate for one that did not (a preempted job is
charged again when it runs again). Charging at the claim keeps a tenant whose jobs are
all still running from being picked for every free slot meanwhile.

A tenant that was idle keeps an old, low virtual time; to keep it from taking the
engines for as long as it was away, its virtual time counts as at least
:data:`CREDIT` below the busiest waiting tenant's (its credit for waiting is bounded).

Everything lives in the store (the ``tenants`` table), so workers in many processes on
one PostgreSQL database share one order. ``INFERQ_FAIRNESS=off`` restores one global
order (service class, priority, submission order) for single-team installs.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from inferq.core.errors import InvalidRequest

#: tokens a job is assumed to cost before a tenant has finished any
DEFAULT_COST = 100.0
#: how far (in tokens at weight 1) a returning tenant may start behind the busiest one
CREDIT = 500.0
#: how much one settled job moves a tenant's average cost per job
AVERAGE_WEIGHT = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantShare:
    """A tenant's row of the fair order."""

    tenant: str
    weight: float = 1.0
    #: tokens charged divided by the weight
    vtime: float = 0.0
    #: recent tokens per job; 0 when none has been settled
    avg_cost: float = 0.0

    @property
    def cost(self) -> float:
        """What the claim charges one job of this tenant, in tokens."""
        return self.avg_cost if self.avg_cost > 0 else DEFAULT_COST

    @property
    def per_job(self) -> float:
        """How far one claimed job moves the tenant's virtual time."""
        return self.cost / self.weight


@dataclass(frozen=True, slots=True, kw_only=True)
class Waiting:
    """A tenant with claimable work, as the claim's first read finds it."""

    share: TenantShare
    #: its most urgent waiting service class
    service_class: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Pick:
    """How many of a tenant's jobs of one class a claim takes."""

    tenant: str
    service_class: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Charge:
    """What a claim adds to a tenant's virtual time: first raised to ``floor``."""

    tenant: str
    floor: float
    amount: float


@dataclass(frozen=True, slots=True)
class Settlement:
    """What the worker reports for one tenant's jobs that ended since its last report."""

    #: tokens processed by the jobs that succeeded
    tokens: int = 0
    #: how many succeeded
    jobs: int = 0
    #: how many ended otherwise (failed, stopped, preempted): their estimate is refunded
    refunds: int = 0

    def __add__(self, other: Settlement) -> Settlement:
        return Settlement(
            self.tokens + other.tokens, self.jobs + other.jobs, self.refunds + other.refunds
        )

    def add(self, *, tokens: int, succeeded: bool) -> Settlement:
        if succeeded:
            return Settlement(self.tokens + tokens, self.jobs + 1, self.refunds)
        return Settlement(self.tokens, self.jobs, self.refunds + 1)


class FairShares(Protocol):
    """The store's side of the fair order."""

    async def settle_shares(self, settlements: Mapping[str, Settlement]) -> None:
        """Correct each tenant's charge by what its ended jobs really cost."""


class Unsettled:
    """What ended jobs cost their tenants, not yet settled in the store: a worker's or a
    node protocol's, noted as jobs end and settled now and then."""

    def __init__(self) -> None:
        self._pending: dict[str, Settlement] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def note(self, tenant: str, tokens: int | None) -> None:
        """An ended attempt of the tenant's: the tokens it processed, or None when it did
        not succeed (its estimate is refunded)."""
        before = self._pending.get(tenant, Settlement())
        self._pending[tenant] = before.add(tokens=tokens or 0, succeeded=tokens is not None)

    async def settle(self, store: FairShares) -> None:
        """Correct the tenants' charges in ``store``; what it fails to take is kept for
        the next call (and the error raised)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            await store.settle_shares(pending)
        except Exception:
            for tenant, settlement in pending.items():
                self._pending[tenant] = settlement + self._pending.get(tenant, Settlement())
            raise


class TenantStore(Protocol):
    """Tenants' weights, for the operator."""

    async def set_tenant_weight(self, tenant: str, weight: float) -> TenantShare:
        """Set the tenant's weight (creating its row); return the row."""

    async def list_tenants(self) -> list[TenantShare]:
        """Every tenant with a row (one that set a weight or was charged), by name."""


def floor_of(waiting: Iterable[Waiting]) -> float:
    """The lowest virtual time a waiting tenant counts with (see :data:`CREDIT`)."""
    return max((w.share.vtime for w in waiting), default=0.0) - CREDIT


def plan(waiting: Sequence[Waiting], limit: int) -> list[Pick]:
    """Divide ``limit`` jobs among the waiting tenants, in fair order.

    Class first; within a class, each job goes to the tenant with the lowest virtual
    time, which then moves on by one job's cost over its weight (so a claim of many jobs
    interleaves tenants by weight). A tenant may have fewer jobs than it is given: the
    claim takes what there is and the worker claims again for the slots left.
    """
    floor = floor_of(waiting)
    heap = [
        (w.service_class, max(w.share.vtime, floor), w.share.tenant, i)
        for i, w in enumerate(waiting)
    ]
    heapq.heapify(heap)
    counts: dict[int, int] = {}
    for _ in range(limit if heap else 0):
        klass, key, tenant, i = heapq.heappop(heap)
        counts[i] = counts.get(i, 0) + 1
        heapq.heappush(heap, (klass, key + waiting[i].share.per_job, tenant, i))
    order = sorted(counts, key=lambda i: (waiting[i].service_class, waiting[i].share.tenant))
    return [
        Pick(
            tenant=waiting[i].share.tenant,
            service_class=waiting[i].service_class,
            count=counts[i],
        )
        for i in order
    ]


def charges(waiting: Sequence[Waiting], claimed: Mapping[str, int]) -> list[Charge]:
    """What to add to each tenant's virtual time for the jobs it had claimed, by tenant
    name (the order every store locks the rows in)."""
    floor = floor_of(waiting)
    shares = {w.share.tenant: w.share for w in waiting}
    return [
        Charge(
            tenant=tenant,
            floor=floor,
            amount=claimed[tenant] * shares[tenant].per_job,
        )
        for tenant in sorted(claimed)
        if tenant in shares and claimed[tenant] > 0
    ]


def settled(share: TenantShare, settlement: Settlement) -> TenantShare:
    """The tenant's row after a settlement: what the jobs cost beyond (or short of)
    their estimate moves its virtual time, and its average cost follows the jobs'.

    The SQL stores compute the same in their ``settle_share`` query.
    """
    charged = (settlement.jobs + settlement.refunds) * share.cost
    vtime = share.vtime + (settlement.tokens - charged) / share.weight
    avg = share.avg_cost
    if settlement.jobs:
        base = share.cost
        avg = base + AVERAGE_WEIGHT * (settlement.tokens / settlement.jobs - base)
    return TenantShare(tenant=share.tenant, weight=share.weight, vtime=vtime, avg_cost=avg)


def check_weight(weight: float) -> float:
    """A tenant's weight must be a positive, finite number."""
    if not (0 < weight < 1e6):
        raise InvalidRequest("a tenant's weight must be above 0 and below 1000000", param="weight")
    return weight
