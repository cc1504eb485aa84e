"""One contract, every JobStore adapter: memory (the fake) and SQLite."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferq.core.errors import Conflict
from inferq.core.models import (
    ApiKey,
    ChatMessage,
    ChatRequest,
    ChatResult,
    Job,
    JobError,
    JobFilter,
    Lease,
    Usage,
)
from inferq.core.states import JobState, ServiceClass
from inferq.store.base import JobStore
from inferq.store.memory import MemoryStore
from inferq.store.sqlite import SQLiteStore
from tests.support.postgres import postgres_store

LEASE = 30.0
T0 = 1_000_000.0


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "postgres":
        async with postgres_store() as pg:
            yield pg
        return
    the_store: JobStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "jobs.db")
    )
    await the_store.open()
    yield the_store
    await the_store.close()


def make_job(
    *,
    tenant: str = "t1",
    model: str = "m",
    priority: int = 0,
    service_class: ServiceClass = ServiceClass.ASYNC,
    created_at: float = T0,
    deadline_at: float | None = None,
    max_attempts: int = 4,
    text: str = "hello",
) -> Job:
    return Job(
        id=str(uuid.uuid4()),
        tenant=tenant,
        model=model,
        origin="test",
        service_class=service_class,
        priority=priority,
        state=JobState.QUEUED,
        request=ChatRequest(messages=(ChatMessage("user", text),), max_tokens=8),
        created_at=created_at,
        info={"client": "x"},
        inputs={"raw": True},
        max_attempts=max_attempts,
        deadline_at=deadline_at,
    )


async def claim(store: JobStore, limit: int = 10, now: float = T0, **kw: object) -> list[Job]:
    return await store.claim(owner="w1", limit=limit, now=now, lease_seconds=LEASE, **kw)  # type: ignore[arg-type]


def lease_of(job: Job) -> Lease:
    assert job.owner is not None
    return Lease(job.id, job.owner, job.attempt)


RESULT = ChatResult(
    "hi there", "stop", Usage(prompt_tokens=5, completion_tokens=2, cached_tokens=1)
)


async def test_insert_and_get_round_trip(store: JobStore) -> None:
    job = make_job()
    stored = await store.insert_job(job)
    assert stored.seq > 0
    got = await store.get_job(job.id, tenant="t1")
    assert got == stored
    assert got.request == job.request
    assert got.inputs == {"raw": True}


async def test_duplicate_id_is_a_conflict(store: JobStore) -> None:
    job = make_job()
    await store.insert_job(job)
    with pytest.raises(Conflict):
        await store.insert_job(job)


async def test_other_tenant_sees_nothing(store: JobStore) -> None:
    job = await store.insert_job(make_job(tenant="a"))
    assert await store.get_job(job.id, tenant="b") is None
    assert await store.get_job(job.id, tenant=None) is not None
    assert (
        await store.finish(job.id, tenant="b", state=JobState.CANCELLED, error=None, now=T0) is None
    )
    assert (await store.metrics(tenant="b", model=None)).total == 0


async def test_claim_order_class_then_priority_then_fifo(store: JobStore) -> None:
    low = await store.insert_job(make_job(priority=0))
    high1 = await store.insert_job(make_job(priority=5))
    high2 = await store.insert_job(make_job(priority=5))
    batch = await store.insert_job(make_job(priority=100, service_class=ServiceClass.BATCH))
    sync = await store.insert_job(make_job(priority=-1, service_class=ServiceClass.INTERACTIVE))
    claimed = await claim(store)
    assert [j.id for j in claimed] == [sync.id, high1.id, high2.id, low.id, batch.id]
    assert all(j.state is JobState.RUNNING and j.attempt == 1 for j in claimed)
    assert await claim(store) == []


async def test_claim_respects_limit_class_and_models(store: JobStore) -> None:
    await store.insert_job(make_job(model="other"))
    a = await store.insert_job(make_job())
    await store.insert_job(make_job())
    assert await claim(store, max_class=ServiceClass.INTERACTIVE) == []
    got = await claim(store, limit=1, models=["m"])
    assert [j.id for j in got] == [a.id]


async def test_claim_skips_jobs_past_their_deadline(store: JobStore) -> None:
    await store.insert_job(make_job(deadline_at=T0 - 1))
    assert await claim(store) == []
    assert len(await store.expire_overdue(now=T0)) == 1


async def test_fenced_updates_need_the_current_lease(store: JobStore) -> None:
    await store.insert_job(make_job())
    (job,) = await claim(store)
    stale = Lease(job.id, "someone-else", job.attempt)
    assert not await store.complete(stale, RESULT, now=T0)
    assert not await store.set_progress(Lease(job.id, job.owner or "", 99), {"progress": 0.5})
    assert await store.set_progress(lease_of(job), {"progress": 0.5})
    assert await store.complete(lease_of(job), RESULT, now=T0 + 1)
    done = await store.get_job(job.id, tenant=None)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    assert done.result == RESULT
    assert done.usage == RESULT.usage
    assert done.info == {"client": "x", "progress": 1}
    assert done.finished_at == T0 + 1
    # a second completion, or any late write, changes nothing
    assert not await store.complete(lease_of(job), RESULT, now=T0 + 2)
    assert not await store.fail(lease_of(job), JobError("x", "y"), now=T0, retry=True)


async def test_concurrent_inserts_each_get_their_own_outcome(store: JobStore) -> None:
    # An adapter may commit concurrent writes together (group commit); each call
    # still gets what it alone would have got.
    jobs = [make_job(text=f"job {i}") for i in range(20)]
    stored = await asyncio.gather(*(store.insert_job(job) for job in jobs))
    assert [j.id for j in stored] == [j.id for j in jobs]
    assert len({j.seq for j in stored}) == 20
    more = [make_job(text=f"more {i}") for i in range(3)]
    outcomes = await asyncio.gather(
        *(store.insert_job(job) for job in [*more, jobs[3], more[0]]), return_exceptions=True
    )
    assert isinstance(outcomes[1], Job) and isinstance(outcomes[2], Job)
    assert isinstance(outcomes[3], Conflict)
    assert sorted(type(o).__name__ for o in (outcomes[0], outcomes[4])) == ["Conflict", "Job"]
    for job in [*stored, *outcomes]:
        if isinstance(job, Job):
            assert await store.get_job(job.id, tenant=None) == job


async def test_concurrent_completes_each_get_their_own_outcome(store: JobStore) -> None:
    for _ in range(6):
        await store.insert_job(make_job())
    jobs = await claim(store)
    stale = Lease(jobs[1].id, "someone-else", jobs[1].attempt)
    outcomes = await asyncio.gather(
        *(store.complete(lease_of(job), RESULT, now=T0 + 1) for job in jobs),
        store.complete(lease_of(jobs[0]), RESULT, now=T0 + 1),  # the same lease twice
        store.complete(stale, RESULT, now=T0 + 1),
    )
    assert sorted([outcomes[0], outcomes[6]]) == [False, True]
    assert outcomes[1:6] == [True] * 5
    assert outcomes[7] is False
    for job in jobs:
        done = await store.get_job(job.id, tenant=None)
        assert done is not None
        assert (done.state, done.result, done.finished_at) == (JobState.SUCCEEDED, RESULT, T0 + 1)


async def test_expired_lease_is_reclaimed_with_priority_and_error(store: JobStore) -> None:
    await store.insert_job(make_job(priority=1))
    low = await store.insert_job(make_job(priority=0))
    (first,) = await claim(store, limit=1)
    later = T0 + LEASE + 1
    reclaimed = await store.claim(owner="w2", limit=1, now=later, lease_seconds=LEASE)
    assert [j.id for j in reclaimed] == [first.id]  # priority 1 beats the queued priority 0
    job = reclaimed[0]
    assert job.attempt == 2 and job.owner == "w2" and job.retries == 1
    assert job.error is not None and job.error.code == "worker_lost"
    # the old worker's lease no longer works
    assert not await store.complete(lease_of(first), RESULT, now=later)
    assert await store.complete(lease_of(job), RESULT, now=later)
    assert (await claim(store, now=later))[0].id == low.id


async def test_renewed_lease_is_not_reclaimed(store: JobStore) -> None:
    await store.insert_job(make_job())
    (job,) = await claim(store)
    held = await store.renew_leases([lease_of(job)], until=T0 + 2 * LEASE)
    assert held == {job.id}
    assert await store.claim(owner="w2", limit=1, now=T0 + LEASE + 1, lease_seconds=LEASE) == []


async def test_attempts_run_out_and_the_last_error_is_kept(store: JobStore) -> None:
    job = await store.insert_job(make_job(max_attempts=2))
    now = T0
    for attempt in (1, 2):
        (got,) = await store.claim(owner=f"w{attempt}", limit=1, now=now, lease_seconds=LEASE)
        assert got.attempt == attempt
        now += LEASE + 1
    assert await store.claim(owner="w3", limit=1, now=now, lease_seconds=LEASE) == []
    failed = await store.get_job(job.id, tenant=None)
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert failed.error is not None and failed.error.code == "worker_lost"
    assert "attempt 2 of 2" in failed.error.message


async def test_fail_with_retry_requeues_until_attempts_run_out(store: JobStore) -> None:
    job = await store.insert_job(make_job(max_attempts=2))
    (got,) = await claim(store)
    assert await store.fail(lease_of(got), JobError("boom", "first"), now=T0, retry=True)
    again = await store.get_job(job.id, tenant=None)
    assert again is not None and again.state is JobState.QUEUED and again.finished_at is None
    (got,) = await claim(store)
    assert await store.fail(lease_of(got), JobError("boom", "second"), now=T0, retry=True)
    final = await store.get_job(job.id, tenant=None)
    assert final is not None and final.state is JobState.FAILED
    assert final.error == JobError("boom", "second")


async def test_fail_without_retry_is_final(store: JobStore) -> None:
    job = await store.insert_job(make_job())
    (got,) = await claim(store)
    assert await store.fail(lease_of(got), JobError("bad", "no"), now=T0, retry=False)
    final = await store.get_job(job.id, tenant=None)
    assert final is not None and final.state is JobState.FAILED and final.attempt == 1


async def test_finish_cancels_queued_and_running_but_not_finished(store: JobStore) -> None:
    queued = await store.insert_job(make_job())
    running = await store.insert_job(make_job())
    await claim(store, limit=1)
    for job in (queued, running):
        outcome = await store.finish(
            job.id, tenant="t1", state=JobState.CANCELLED, error=None, now=T0
        )
        assert outcome is not None
        assert outcome[1].state is JobState.CANCELLED
        assert outcome[1].owner is None
    again = await store.finish(queued.id, tenant="t1", state=JobState.EXPIRED, error=None, now=T0)
    assert again is not None
    before, after = again
    assert before.state is after.state is JobState.CANCELLED


async def test_cancelled_running_job_loses_its_lease(store: JobStore) -> None:
    await store.insert_job(make_job())
    (job,) = await claim(store)
    await store.finish(job.id, tenant=None, state=JobState.CANCELLED, error=None, now=T0)
    assert await store.renew_leases([lease_of(job)], until=T0 + LEASE) == set()
    assert not await store.complete(lease_of(job), RESULT, now=T0)


async def test_cancel_queued_and_metrics(store: JobStore) -> None:
    for _ in range(3):
        await store.insert_job(make_job())
    await store.insert_job(make_job(model="other"))
    await store.insert_job(make_job(tenant="t2"))
    await claim(store, limit=1, models=["m"])
    metrics = await store.metrics(tenant="t1", model="m")
    assert (metrics.running, metrics.waiting, metrics.total) == (1, 2, 3)
    assert await store.cancel_queued(tenant="t1", model="m", now=T0) == 2
    metrics = await store.metrics(tenant="t1", model="m")
    assert (metrics.running, metrics.waiting, metrics.total) == (1, 0, 3)
    assert (await store.metrics(tenant="t2", model=None)).waiting == 1


async def test_expire_overdue_covers_queued_and_running(store: JobStore) -> None:
    a = await store.insert_job(make_job(deadline_at=T0 + 5))
    b = await store.insert_job(make_job(deadline_at=T0 + 5))
    await store.insert_job(make_job(deadline_at=T0 + 50))
    await claim(store, limit=1)
    assert sorted(await store.expire_overdue(now=T0 + 10)) == sorted([a.id, b.id])
    got = await store.get_job(a.id, tenant=None)
    assert got is not None and got.state is JobState.EXPIRED


async def test_list_jobs_filters_newest_first(store: JobStore) -> None:
    first = await store.insert_job(make_job())
    second = await store.insert_job(make_job(model="other"))
    await store.insert_job(make_job(tenant="t2"))
    listed = await store.list_jobs(JobFilter(tenant="t1"))
    assert [j.id for j in listed] == [second.id, first.id]
    assert [j.id for j in await store.list_jobs(JobFilter(model="other"))] == [second.id]
    queued = await store.list_jobs(JobFilter(states=frozenset({JobState.QUEUED}), limit=2))
    assert len(queued) == 2


async def test_keys(store: JobStore) -> None:
    key = ApiKey(id="k1", name="alice", tenant="acme", prefix="iq-abc", created_at=T0)
    await store.insert_key(key, key_hash="h1")
    assert await store.find_key("h1") == key
    assert await store.find_key("nope") is None
    with pytest.raises(Conflict):
        await store.insert_key(
            ApiKey(id="k2", name="alice", tenant="x", prefix="p", created_at=T0), key_hash="h2"
        )
    revoked = await store.revoke_key("alice", now=T0 + 1)
    assert revoked is not None and revoked.revoked_at == T0 + 1
    assert (await store.find_key("h1")) == revoked
    assert await store.revoke_key("nobody", now=T0) is None
    assert [k.id for k in await store.list_keys()] == ["k1"]
