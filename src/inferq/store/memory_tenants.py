"""The memory store's tenants: weights and virtual times (:mod:`inferq.core.fairness`),
and the fair pick among queued jobs that the SQL stores make in ``store/fair.py``."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence

from inferq.core import fairness
from inferq.core.fairness import Settlement, TenantShare, Waiting
from inferq.core.models import Job
from inferq.core.scheduling import claim_order


class MemoryTenants:
    """Each tenant's row of the fair order, in a dictionary."""

    def __init__(self) -> None:
        self.shares: dict[str, TenantShare] = {}

    def _share(self, tenant: str) -> TenantShare:
        return self.shares.get(tenant) or TenantShare(tenant=tenant)

    def fair_pick(self, queued: Sequence[Job], limit: int) -> list[Job]:
        """Up to ``limit`` of ``queued`` (claimable jobs) in fair order, the tenants
        charged for them."""
        best: dict[str, int] = {}
        for job in queued:
            best[job.tenant] = min(best.get(job.tenant, 99), int(job.service_class))
        waiting = [
            Waiting(share=self._share(tenant), service_class=klass)
            for tenant, klass in sorted(best.items())
        ]
        picked: list[Job] = []
        for pick in fairness.plan(waiting, limit):
            mine = [
                job
                for job in queued
                if job.tenant == pick.tenant and job.service_class == pick.service_class
            ]
            picked += sorted(mine, key=claim_order)[: pick.count]
        for charge in fairness.charges(waiting, Counter(job.tenant for job in picked)):
            share = self._share(charge.tenant)
            vtime = max(share.vtime, charge.floor) + charge.amount
            self.shares[charge.tenant] = dataclasses.replace(share, vtime=vtime)
        return picked

    async def settle_shares(self, settlements: Mapping[str, Settlement]) -> None:
        for tenant, settlement in settlements.items():
            if tenant in self.shares:
                self.shares[tenant] = fairness.settled(self.shares[tenant], settlement)

    async def set_tenant_weight(self, tenant: str, weight: float) -> TenantShare:
        share = dataclasses.replace(self._share(tenant), weight=fairness.check_weight(weight))
        self.shares[tenant] = share
        return share

    async def list_tenants(self) -> list[TenantShare]:
        return [self.shares[t] for t in sorted(self.shares)]
