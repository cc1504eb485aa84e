"""Rate buckets and limits on every store (memory, SQLite, PostgreSQL): one request's
buckets are read, decided and written in one transaction, so concurrent requests never
both spend the last of an allowance."""

from __future__ import annotations

import asyncio

from inferq.core.limits import Demand, Limits
from inferq.core.models import ApiKey
from inferq.store.base import JobStore
from tests.contract.test_store_contract import store

__all__ = ["store"]

T0 = 1_000.0


def demand(subject: str, limit: int, cost: int = 1, kind: str = "requests") -> Demand:
    return Demand(subject=subject, limit=limit, cost=cost, kind=kind)


async def test_buckets_are_spent_and_refilled(store: JobStore) -> None:
    verdicts = [await store.take_rates([demand("key:a:requests", 3)], now=T0) for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [v.buckets[0].remaining for v in verdicts] == [2, 1, 0, 0]
    assert verdicts[3].retry_after == 20
    # another subject has its own bucket; after 20 s one request is back
    assert (await store.take_rates([demand("key:b:requests", 3)], now=T0)).allowed
    assert (await store.take_rates([demand("key:a:requests", 3)], now=T0 + 20)).allowed


async def test_a_refused_request_spends_none_of_its_buckets(store: JobStore) -> None:
    tokens = demand("key:a:tokens", 100, cost=70, kind="tokens")
    assert (await store.take_rates([demand("key:a:requests", 5), tokens], now=T0)).allowed
    refused = await store.take_rates([demand("key:a:requests", 5), tokens], now=T0)
    assert not refused.allowed and refused.refused == ("tokens",)
    again = await store.take_rates([demand("key:a:requests", 5)], now=T0)
    assert again.buckets[0].remaining == 3  # the refused request took no request


async def test_concurrent_requests_never_overspend(store: JobStore) -> None:
    outcomes = await asyncio.gather(
        *(store.take_rates([demand("key:c:requests", 5)], now=T0) for _ in range(20))
    )
    assert sum(v.allowed for v in outcomes) == 5


async def test_key_and_tenant_limits(store: JobStore) -> None:
    key = ApiKey(id="key_1", name="one", tenant="t", prefix="iq-", created_at=T0, rpm=5)
    await store.insert_key(key, key_hash="h1")
    found = await store.find_key("h1")
    assert found is not None and (found.rpm, found.tpm) == (5, None)
    changed = await store.set_key_limits("one", Limits(rpm=None, tpm=1000))
    assert changed is not None and (changed.rpm, changed.tpm) == (None, 1000)
    assert await store.set_key_limits("nobody", Limits(rpm=1)) is None
    assert await store.tenant_limits("t") == Limits()
    await store.set_tenant_limits("t", Limits(rpm=7))
    await store.set_tenant_weight("t", 2)  # the weight and the limits share a row
    assert await store.tenant_limits("t") == Limits(rpm=7)
    assert [s.weight for s in await store.list_tenants()] == [2]
