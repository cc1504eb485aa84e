"""The fair claim (:mod:`inferq.core.fairness`) in the SQL stores.

1. The expired leases first (the ``claim`` query with ``:queued`` false; it also fails
   the leases out of attempts), in the global order as before.
2. ``fair_waiting``: every tenant with claimable work, its most urgent class and its row
   of ``tenants`` (weight, virtual time, average cost): a skip scan of the ``jobs_fair``
   index, one probe per waiting tenant.
3. :func:`inferq.core.fairness.plan` divides the free slots among them.
4. The planned jobs are taken and the tenants charged for what they took.

SQLite runs these as steps of one transaction on its writer (:func:`fair_claim`: one
statement per tenant in step 4, no round trips to speak of). PostgreSQL runs step 2 as a
plain read and step 4 as one statement that also charges (each round trip counts there),
and step 1 at most once a second (``inferq.store.postgres``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from inferq.core import fairness
from inferq.core.fairness import Charge, Pick, Settlement, TenantShare, Waiting
from inferq.store.executor import Params, Steps, many
from inferq.store.rows import Row

#: takes the planned jobs: the steps that claim them, giving back the claimed rows
Take = Callable[[Sequence[Pick], Params], Steps[list[Row]]]
#: charges the tenants, in tenant order
ChargeSteps = Callable[[Sequence[Charge]], Steps[None]]


def fair_claim(params: Params, *, take: Take, charge: ChargeSteps) -> Steps[list[Row]]:
    """The claimed rows: expired leases, then the waiting tenants' jobs in fair order."""
    limit = int(params["limit"])
    rescued: list[Row] = yield many("claim", {**params, "queued": False})
    if len(rescued) >= limit:
        return rescued
    found: list[Row] = yield many("fair_waiting", params)
    waiting = waiting_of(found)
    picks = fairness.plan(waiting, limit - len(rescued))
    taken = yield from take(picks, params)
    claimed = Counter(str(r["tenant"]) for r in taken)
    yield from charge(fairness.charges(waiting, claimed))
    return rescued + taken


def waiting_of(found: Sequence[Row]) -> list[Waiting]:
    """The rows of ``fair_waiting``."""
    return [Waiting(share=share_of(r), service_class=int(r["service_class"])) for r in found]


def share_of(row: Row) -> TenantShare:
    return TenantShare(
        tenant=row["tenant"],
        weight=float(row["weight"]),
        vtime=float(row["vtime"]),
        avg_cost=float(row["avg_cost"]),
    )


def settle_params(tenant: str, settlement: Settlement) -> dict[str, object]:
    """Parameters of the ``settle_share`` query."""
    return {
        "tenant": tenant,
        "tokens": settlement.tokens,
        "jobs": settlement.jobs,
        "refunds": settlement.refunds,
        "default_cost": fairness.DEFAULT_COST,
        "alpha": fairness.AVERAGE_WEIGHT,
    }


def in_order(settlements: Mapping[str, Settlement]) -> list[dict[str, object]]:
    """The settlements' parameters by tenant name (every store locks rows in that order)."""
    return [settle_params(t, settlements[t]) for t in sorted(settlements)]
