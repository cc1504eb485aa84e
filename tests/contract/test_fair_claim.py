"""The fair claim (core/fairness.py) on every store: memory, SQLite and PostgreSQL.

Within a service class, waiting tenants share a claim by weight and by what their jobs
cost; within a tenant, priority then submission order; the expired leases first.
"""

from __future__ import annotations

from collections import Counter

import pytest

from inferq.core import fairness
from inferq.core.fairness import Settlement, TenantShare
from inferq.core.models import Job, Lease
from inferq.core.states import JobState, ServiceClass
from inferq.store.base import JobStore
from tests.contract.test_store_contract import (  # the store fixture: every adapter
    LEASE,
    RESULT,
    T0,
    claim,
    make_job,
    store,
)

__all__ = ["store"]


async def fill(store: JobStore, tenant: str, n: int, **kw: object) -> list[Job]:
    return [await store.insert_job(make_job(tenant=tenant, **kw)) for _ in range(n)]  # type: ignore[arg-type]


def tenants(jobs: list[Job]) -> Counter[str]:
    return Counter(job.tenant for job in jobs)


async def test_one_claim_shares_out_tenants_in_fair_order_and_unfair_in_submission_order(
    store: JobStore,
) -> None:
    await fill(store, "a", 10)
    await fill(store, "b", 10)
    assert tenants(await claim(store, limit=4, fair=True)) == {"a": 2, "b": 2}
    assert tenants(await claim(store, limit=4)) == {"a": 4}  # today's global order


async def test_a_tenant_with_few_jobs_is_not_stuck_behind_a_backlog(store: JobStore) -> None:
    await fill(store, "big", 100)
    small = await fill(store, "small", 3)
    first = await claim(store, limit=1, fair=True)
    second = await claim(store, limit=1, fair=True)
    # one each: the big tenant was charged for its first job
    assert tenants(first + second) == {"big": 1, "small": 1}
    third = await claim(store, limit=4, fair=True)
    assert {j.id for j in small} <= {j.id for j in first + second + third}


async def test_weights_share_claims_three_to_one(store: JobStore) -> None:
    await store.set_tenant_weight("a", 3)
    await fill(store, "a", 40)
    await fill(store, "b", 40)
    claimed: list[Job] = []
    for _ in range(20):
        claimed += await claim(store, limit=2, fair=True)
    assert tenants(claimed) == {"a": 30, "b": 10}
    shares = {s.tenant: s for s in await store.list_tenants()}
    assert shares["a"].weight == 3 and shares["b"].weight == 1
    assert shares["a"].vtime == pytest.approx(30 * fairness.DEFAULT_COST / 3)
    assert shares["b"].vtime == pytest.approx(10 * fairness.DEFAULT_COST)


async def test_settled_tokens_decide_the_share(store: JobStore) -> None:
    # a's jobs cost ten times b's: once settled, b gets about ten jobs for each of a's
    await fill(store, "a", 30)
    await fill(store, "b", 60)
    claimed: list[Job] = []
    for _ in range(33):
        got = await claim(store, limit=1, fair=True)
        claimed += got
        for job in got:
            tokens = 1_000 if job.tenant == "a" else 100
            await store.settle_shares({job.tenant: Settlement(tokens=tokens, jobs=1)})
    late = tenants(claimed[13:])
    assert late["b"] >= 5 * late["a"], late


async def test_class_comes_before_share_and_priority_before_fifo(store: JobStore) -> None:
    await fill(store, "a", 3)
    await claim(store, limit=3, fair=True)  # a is now ahead by three jobs' worth
    low, high = await fill(store, "a", 1), await fill(store, "a", 1, priority=5)
    batch = await fill(store, "b", 2, service_class=ServiceClass.BATCH)
    sync = await fill(store, "a", 1, service_class=ServiceClass.INTERACTIVE)
    order = [(await claim(store, limit=1, fair=True))[0].id for _ in range(5)]
    assert order == [j.id for j in sync + high + low + batch]
    # a claim takes a tenant's jobs of one class: the rest at the next claim
    assert await claim(store, limit=5, fair=True) == []
    again = await fill(store, "a", 2, priority=1) + await fill(store, "a", 1, priority=9)
    (first,) = await claim(store, limit=1, fair=True)
    assert first.id == again[2].id  # priority within the tenant
    (second,) = await claim(store, limit=1, fair=True)
    assert second.id == again[0].id  # then submission order


async def test_sync_work_of_a_tenant_far_ahead_still_goes_first(store: JobStore) -> None:
    await store.insert_job(make_job(tenant="a"))
    await store.settle_shares({})
    await fill(store, "a", 20)
    for _ in range(10):
        await claim(store, limit=2, fair=True)
    await fill(store, "b", 5)
    (sync,) = await fill(store, "a", 1, service_class=ServiceClass.INTERACTIVE)
    (first,) = await claim(store, limit=1, fair=True)
    assert first.id == sync.id
    assert (await claim(store, limit=1, fair=True))[0].tenant == "b"


async def test_expired_leases_are_rescued_first(store: JobStore) -> None:
    (lost,) = await fill(store, "a", 1)
    await claim(store, limit=1, fair=True)
    await fill(store, "b", 3)
    got = await claim(store, limit=2, now=T0 + LEASE + 1, fair=True)
    assert got[0].id == lost.id and got[0].attempt == 2
    assert got[0].error is not None and got[0].error.code == "worker_lost"
    assert tenants(got) == {"a": 1, "b": 1}
    assert all(j.state is JobState.RUNNING for j in got)


@pytest.mark.parametrize("fair", [True, False], ids=["fair", "unfair"])
async def test_expired_leases_are_rescued_within_a_second_of_their_expiry(
    store: JobStore, fair: bool
) -> None:
    """A store may look for expired leases at most once a second (on SQLite each look is
    a statement or two of every claim), so a lease that expires just after a look waits
    for the next one; within a second it is claimed again, or failed when out of
    attempts."""
    (lost,) = await fill(store, "a", 1)
    (spent,) = await fill(store, "a", 1, max_attempts=1)
    assert {j.id for j in await claim(store, limit=2, fair=fair)} == {lost.id, spent.id}
    await fill(store, "b", 10)
    seen: list[Job] = []
    for now in (T0 + LEASE - 0.1, T0 + LEASE + 0.3, T0 + LEASE + 1.0):
        seen += await claim(store, limit=1, now=now, fair=fair)
    again = [j for j in seen if j.id == lost.id]
    assert len(again) == 1 and again[0].attempt == 2
    assert again[0].error is not None and again[0].error.code == "worker_lost"
    failed = await store.get_job(spent.id, tenant=None)
    assert failed is not None and failed.state is JobState.FAILED
    assert failed.error is not None and failed.error.code == "worker_lost"


async def test_a_returning_tenant_gets_bounded_credit(store: JobStore) -> None:
    await fill(store, "busy", 60)
    for _ in range(50):
        await claim(store, limit=1, fair=True)  # busy runs alone: 50 jobs charged
    await fill(store, "back", 40)
    credit = int(fairness.CREDIT / fairness.DEFAULT_COST)
    got: list[Job] = []
    for _ in range(credit + 10):
        got += await claim(store, limit=1, fair=True)
    # back catches up by the credit, then they alternate
    assert tenants(got) == {"back": credit + 5, "busy": 5}


async def test_settling_an_unknown_tenant_and_listing(store: JobStore) -> None:
    await store.settle_shares({"nobody": Settlement(tokens=5, jobs=1)})
    assert await store.list_tenants() == []
    share = await store.set_tenant_weight("t", 2.5)
    assert share == TenantShare(tenant="t", weight=2.5)
    await fill(store, "t", 1)
    (job,) = await claim(store, limit=1, fair=True)
    await store.complete(Lease(job.id, "w1", 1), RESULT, now=T0)
    await store.settle_shares({"t": Settlement(tokens=300, jobs=1)})
    charged = TenantShare(tenant="t", weight=2.5, vtime=fairness.DEFAULT_COST / 2.5)
    assert await store.list_tenants() == [fairness.settled(charged, Settlement(300, 1, 0))]


async def test_batch_rows_go_round_robin_per_tenant_then_per_batch(store: JobStore) -> None:
    # tenant a has two batches of 4 rows, tenant b one; a row's priority is minus its line
    for tenant, batch in (("a", "a1"), ("a", "a2"), ("b", "b1")):
        for line in range(1, 5):
            row = make_job(tenant=tenant, priority=-line, service_class=ServiceClass.BATCH)
            await store.insert_job(row.evolve(batch_id=batch, batch_line=line))
    order = [(await claim(store, limit=1, fair=True))[0] for _ in range(8)]
    assert [j.tenant for j in order] == ["a", "b"] * 4  # the tenants alternate
    a_rows = [(j.batch_id, j.batch_line) for j in order if j.tenant == "a"]
    assert a_rows == [("a1", 1), ("a2", 1), ("a1", 2), ("a2", 2)]  # then its batches
