"""The fair claim (:mod:`inferq.core.fairness`) in the SQL stores.

1. The expired leases first (the ``claim`` query with ``:queued`` false, after failing the
   leases out of attempts), in the global order as before; at most once a second for the
   same models and classes (:class:`Rescues`): a lease lasts far longer, and the look cost
   every claim two of its five statements.
2. ``fair_waiting``: every tenant with claimable work, its most urgent class and its row
   of ``tenants`` (weight, virtual time, average cost): a skip scan of the ``jobs_fair``
   index, one probe per waiting tenant.
3. :func:`inferq.core.fairness.plan` divides the free slots among them.
4. The planned jobs are taken and the tenants charged for what they took.

SQLite runs these as steps of one transaction on its writer (:func:`fair_claim`: one
statement per tenant in step 4, no round trips to speak of). PostgreSQL runs step 2 as a
plain read and step 4 as one statement that also charges (each round trip counts there).
"""

from __future__ import annotations

import math
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


#: seconds between two looks of a store's claims for expired leases (for the same models
#: and classes)
RESCUE_EVERY = 1.0


class Rescues:
    """When the claims of one store (fair ones, and SQLite's unfair ones) last looked for
    expired leases, by what they looked for (the models and the classes): one engine's
    look must not stand in for another's."""

    def __init__(self) -> None:
        self._at: dict[tuple[tuple[str, ...] | None, int], float] = {}

    def due(self, params: Params) -> bool:
        """Whether the claim of ``params`` looks now (and counts as having looked); a
        clock that went back looks at once."""
        now, models = float(params["now"]), params["models"]
        looked = (None if models is None else tuple(models), int(params["max_class"]))
        if now - RESCUE_EVERY < self._at.get(looked, -math.inf) <= now:
            return False
        self._at[looked] = now
        return True


def fair_claim(
    params: Params, *, take: Take, charge: ChargeSteps, rescue: bool = True
) -> Steps[list[Row]]:
    """The claimed rows: expired leases (when ``rescue``), then the waiting tenants'
    jobs in fair order."""
    limit = int(params["limit"])
    rescued: list[Row] = []
    if rescue:
        rescued = yield many("claim", {**params, "queued": False, "rescue": True})
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
