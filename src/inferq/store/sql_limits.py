"""The SQL store's rate buckets and tenants' limits (:class:`~inferq.core.limits.RateStore`).

A request's buckets are created if missing, then read locked (PostgreSQL: ``FOR
UPDATE``, in subject order, so concurrent requests of a fleet queue on the same rows
instead of both spending one allowance; SQLite: its one writer), decided by
:func:`inferq.core.limits.decide`, and written back: one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from inferq.core.limits import Demand, Limits, Verdict, decide
from inferq.core.models import ApiKey
from inferq.store import rows
from inferq.store.executor import Executor, Steps, count, many

E = TypeVar("E", bound=Executor)


class SqlLimits(Generic[E]):
    """Rate buckets and limits over the executor ``db``."""

    db: E

    async def take_rates(self, demands: Sequence[Demand], *, now: float) -> Verdict:
        return await self.db.atomic(_take(demands, now))

    async def tenant_limits(self, tenant: str) -> Limits:
        row = await self.db.fetch_one("tenant_limits", {"tenant": tenant})
        return Limits(row["rpm"], row["tpm"]) if row else Limits()

    async def set_tenant_limits(self, tenant: str, limits: Limits) -> None:
        await self.db.execute(
            "set_tenant_limits", {"tenant": tenant, "rpm": limits.rpm, "tpm": limits.tpm}
        )

    async def set_key_limits(self, id_or_name: str, limits: Limits) -> ApiKey | None:
        params = {"key": id_or_name, "rpm": limits.rpm, "tpm": limits.tpm}
        row = await self.db.fetch_one("set_key_limits", params)
        return rows.row_to_key(row) if row else None


def _take(demands: Sequence[Demand], now: float) -> Steps[Verdict]:
    subjects = sorted({d.subject for d in demands})
    yield count("ensure_buckets", {"subjects": subjects})
    found = yield many("lock_buckets", {"subjects": subjects})
    verdict, after = decide(demands, {r["subject"]: float(r["full_at"]) for r in found}, now)
    for subject in sorted(after):
        yield count("put_bucket", {"subject": subject, "full_at": after[subject]})
    return verdict
