"""Answers remembered a few seconds (core/lookups.py): the callers that miss together
share one read, a read under way when the answers are cleared is not remembered, and a
failed or abandoned read does not stop the others."""

from __future__ import annotations

import asyncio

import pytest

from inferq.core.limits import Limits, RateLimiter
from inferq.core.lookups import TimedLookups
from inferq.core.models import ApiKey
from inferq.store.memory import MemoryStore


async def settle() -> None:
    """Let every task ready to run take its steps (a read started by a caller is a task
    of its own, a turn later)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Reads:
    """A store read that waits until released, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.answer = "first"
        self.fail = False

    async def __call__(self, digest: str) -> str | None:
        self.calls.append(digest)
        await self.release.wait()
        if self.fail:
            raise OSError("the store went away")
        return f"{self.answer}:{digest}"


async def test_callers_that_miss_together_share_one_read() -> None:
    now = [100.0]
    lookups: TimedLookups[str] = TimedLookups(2.0, clock=lambda: now[0])
    reads = Reads()
    callers = [asyncio.create_task(lookups.get("a", reads)) for _ in range(64)]
    other = asyncio.create_task(lookups.get("b", reads))
    await settle()
    reads.release.set()
    assert await asyncio.gather(*callers) == ["first:a"] * 64
    assert await other == "first:b"
    assert reads.calls == ["a", "b"]
    # remembered for the time given, then read again
    now[0] += 1.9
    assert await lookups.get("a", reads) == "first:a" and len(reads.calls) == 2
    now[0] += 0.2
    reads.answer = "second"
    assert await lookups.get("a", reads) == "second:a" and len(reads.calls) == 3


async def test_a_read_under_way_when_the_answers_are_cleared_is_not_remembered() -> None:
    lookups: TimedLookups[str] = TimedLookups(60.0)
    calls: list[str] = []
    late = asyncio.Event()

    async def load(digest: str) -> str:
        calls.append(digest)
        if len(calls) == 1:  # read before the revocation, answering after the next read
            await late.wait()
            return "before"
        return "after"

    before = asyncio.create_task(lookups.get("a", load))
    await settle()
    lookups.clear()  # a revocation: what the read under way finds may be older than it
    assert await lookups.get("a", load) == "after"  # not joined to the read under way
    late.set()
    assert await before == "before"
    assert await lookups.get("a", load) == "after"
    assert calls == ["a", "a"]


async def test_a_failed_read_fails_its_callers_and_is_not_remembered() -> None:
    lookups: TimedLookups[str] = TimedLookups(60.0)
    reads = Reads()
    reads.fail = True
    callers = [asyncio.create_task(lookups.get("a", reads)) for _ in range(3)]
    await settle()
    reads.release.set()
    for outcome in await asyncio.gather(*callers, return_exceptions=True):
        assert isinstance(outcome, OSError)
    assert reads.calls == ["a"]
    reads.fail = False
    assert await lookups.get("a", reads) == "first:a"
    assert reads.calls == ["a", "a"]


async def test_a_cancelled_caller_leaves_the_read_to_the_others() -> None:
    lookups: TimedLookups[str] = TimedLookups(60.0)
    reads = Reads()
    leaving = asyncio.create_task(lookups.get("a", reads))
    staying = asyncio.create_task(lookups.get("a", reads))
    await settle()
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    reads.release.set()
    assert await staying == "first:a"
    assert reads.calls == ["a"]


async def test_the_limiter_reads_a_tenants_limits_once_for_the_requests_that_miss() -> None:
    store = MemoryStore()
    await store.set_tenant_limits("t", Limits(rpm=1_000))
    reads: list[str] = []
    tenant_limits = store.tenant_limits

    async def counted(tenant: str) -> Limits:
        reads.append(tenant)
        await asyncio.sleep(0.01)
        return await tenant_limits(tenant)

    store.tenant_limits = counted  # type: ignore[method-assign]
    limiter = RateLimiter(store)
    key = ApiKey(id="k", name="k", tenant="t", prefix="iq-", created_at=0.0)
    verdicts = await asyncio.gather(*(limiter.admit(key) for _ in range(32)))
    assert reads == ["t"]
    assert all(v is not None and v.allowed for v in verdicts)
