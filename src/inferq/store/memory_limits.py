"""The memory store's rate buckets and tenants' limits (:class:`~inferq.core.limits.RateStore`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from inferq.core.limits import Demand, Limits, Verdict, decide
from inferq.core.models import ApiKey


class MemoryLimits:
    """Buckets and limits in dictionaries; the keys are the memory store's."""

    keys: dict[str, tuple[ApiKey, str]]

    def __init__(self) -> None:
        self.buckets: dict[str, float] = {}
        self.limits: dict[str, Limits] = {}

    async def take_rates(self, demands: Sequence[Demand], *, now: float) -> Verdict:
        verdict, after = decide(demands, self.buckets, now)
        self.buckets.update(after)
        return verdict

    async def tenant_limits(self, tenant: str) -> Limits:
        return self.limits.get(tenant, Limits())

    async def set_tenant_limits(self, tenant: str, limits: Limits) -> None:
        self.limits[tenant] = limits

    async def set_key_limits(self, id_or_name: str, limits: Limits) -> ApiKey | None:
        for key_id, (key, key_hash) in self.keys.items():
            if id_or_name in (key.id, key.name):
                changed = dataclasses.replace(key, rpm=limits.rpm, tpm=limits.tpm)
                self.keys[key_id] = (changed, key_hash)
                return changed
        return None
