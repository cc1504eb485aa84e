"""Request and token limits (core/limits.py): the buckets' arithmetic, the admission
estimate, and the limiter over the memory store (keys, tenants, server defaults)."""

from __future__ import annotations

import pytest

from inferq.core.errors import InvalidRequest
from inferq.core.limits import (
    Demand,
    Limits,
    RateLimiter,
    RateLimitExceeded,
    check_limit,
    decide,
    estimate_tokens,
)
from inferq.core.models import ApiKey
from inferq.store.memory import MemoryStore

T0 = 1_000.0


def requests(limit: int, subject: str = "k:requests") -> Demand:
    return Demand(subject=subject, limit=limit, cost=1, kind="requests")


def test_a_bucket_holds_a_minute_and_refills_steadily() -> None:
    state: dict[str, float] = {}
    for i in range(5):
        verdict, after = decide([requests(5)], state, T0)
        assert verdict.allowed and verdict.buckets[0].remaining == 4 - i
        state.update(after)
    verdict, after = decide([requests(5)], state, T0)
    assert not verdict.allowed and after == {} and verdict.refused == ("requests",)
    # one request comes back every 12 s
    assert verdict.retry_after == pytest.approx(12)
    assert verdict.buckets[0].reset == pytest.approx(60)
    assert decide([requests(5)], state, T0 + 11.9)[0].allowed is False
    assert decide([requests(5)], state, T0 + 12)[0].allowed is True


def test_every_bucket_must_have_room_and_none_is_spent_otherwise() -> None:
    tokens = Demand(subject="k:tokens", limit=100, cost=80, kind="tokens")
    verdict, state = decide([requests(10), tokens], {}, T0)
    assert verdict.allowed
    verdict, after = decide([requests(10), tokens], state, T0 + 1)
    assert not verdict.allowed and verdict.refused == ("tokens",) and after == {}
    (req, tok) = verdict.buckets
    assert (req.kind, req.remaining, tok.kind, tok.remaining) == ("requests", 9, "tokens", 21)
    # the bucket is 47 s from full; 80 more tokens take 48 s: 35 s over the minute
    assert verdict.retry_after == pytest.approx(35)


def test_a_request_larger_than_the_allowance_takes_the_whole_bucket() -> None:
    big = Demand(subject="k:tokens", limit=100, cost=5_000, kind="tokens")
    verdict, state = decide([big], {}, T0)
    assert verdict.allowed and verdict.buckets[0].remaining == 0
    assert not decide([big], state, T0 + 1)[0].allowed


def test_the_tightest_bucket_of_each_kind_is_reported() -> None:
    verdict, _ = decide([requests(100, "key:requests"), requests(3, "tenant:requests")], {}, T0)
    assert [(b.limit, b.remaining) for b in verdict.buckets] == [(3, 2)]


def test_estimate_counts_text_and_the_output_asked_for() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x" * 40}],
        "max_tokens": 100,
    }
    assert estimate_tokens(body) == 12 + 100  # the values' 45 characters, then the output
    together = {"model": "m", "payload": {"prompt": "y" * 8, "max_new_tokens": 7}}
    assert estimate_tokens(together) == 3 + 7
    assert estimate_tokens([1, None, True]) == 0


@pytest.mark.parametrize("value", [-1, 10**13])
def test_a_limit_is_positive(value: int) -> None:
    with pytest.raises(InvalidRequest):
        check_limit(value, "rpm")
    assert check_limit(0, "rpm") is None and check_limit(7, "rpm") == 7


async def test_keys_tenants_and_defaults() -> None:
    store = MemoryStore()
    clock = [T0]
    limiter = RateLimiter(store, defaults=Limits(rpm=2), clock=lambda: clock[0], cache_seconds=0)
    own = ApiKey(id="k1", name="own", tenant="t", prefix="iq-", created_at=0, rpm=3)
    plain = ApiKey(id="k2", name="plain", tenant="t", prefix="iq-", created_at=0)
    other = ApiKey(id="k3", name="other", tenant="u", prefix="iq-", created_at=0)
    for _ in range(3):
        assert await limiter.admit(own) is not None
    with pytest.raises(RateLimitExceeded) as refused:
        await limiter.admit(own)
    assert refused.value.retry_after == 20 and refused.value.code == "rate_limit_exceeded"
    for _ in range(2):  # the default, in a bucket of its own
        await limiter.admit(plain)
    with pytest.raises(RateLimitExceeded):
        await limiter.admit(plain)
    # the tenant's limit is shared by its keys
    await store.set_tenant_limits("u", Limits(rpm=1, tpm=50))
    assert (await limiter.admit(other, tokens=10)) is not None
    with pytest.raises(RateLimitExceeded):
        await limiter.admit(other)


async def test_a_key_without_any_limit_costs_nothing() -> None:
    store = MemoryStore()
    key = ApiKey(id="k", name="k", tenant="t", prefix="iq-", created_at=0)
    assert await RateLimiter(store).admit(key, tokens=10**9) is None
    assert store.buckets == {}
