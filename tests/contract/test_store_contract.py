"""One contract, every JobStore adapter: memory (the fake), SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inferq.core.errors import Conflict
from inferq.core.models import (
    ApiKey,
    Batch,
    BatchCounts,
    FileRecord,
    Job,
    JobError,
    JobFilter,
    Lease,
)
from inferq.core.ports import BatchFilter, ClaimOrder, Ending, FileFilter, RowFilter
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatMessage, ChatRequest, ChatResult, EmbedRequest, EmbedResult, Usage
from inferq.store import sqlite as sqlite_store
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


async def claim(
    store: JobStore,
    limit: int = 10,
    now: float = T0,
    max_class: ServiceClass = ServiceClass.BATCH,
    models: list[str] | None = None,
    fair: bool = False,
) -> list[Job]:
    order = ClaimOrder(owner="w1", limit=limit, lease_seconds=LEASE, models=models, fair=fair)
    return await store.claim(order, now=now, max_class=max_class)


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
    assert await store.finish(job.id, Ending(JobState.CANCELLED), tenant="b", now=T0) is None
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


@pytest.mark.parametrize("fair", [False, True])
async def test_insert_and_claim_takes_the_new_job_when_its_turn_has_come(
    store: JobStore, fair: bool
) -> None:
    order = ClaimOrder(owner="w1", limit=2, lease_seconds=LEASE, models=["m"], fair=fair)
    new = make_job(service_class=ServiceClass.INTERACTIVE)
    stored, claimed = await store.insert_and_claim(new, order, now=T0)
    assert stored.id == new.id and stored.seq > 0 and stored.state is JobState.QUEUED
    assert [(j.id, j.state, j.owner, j.attempt) for j in claimed] == [
        (new.id, JobState.RUNNING, "w1", 1)
    ]
    assert claimed[0].lease_expires_at == T0 + LEASE
    assert (await store.get_job(new.id, tenant=None)) == claimed[0]
    assert await claim(store) == []


@pytest.mark.parametrize("fair", [False, True])
async def test_insert_and_claim_claims_in_scheduling_order(store: JobStore, fair: bool) -> None:
    # the claim is the worker's usual one: more urgent work already queued goes first,
    # and other models' jobs are left alone
    await store.insert_job(make_job(model="other", service_class=ServiceClass.INTERACTIVE))
    waiting = await store.insert_job(make_job(service_class=ServiceClass.INTERACTIVE))
    order = ClaimOrder(owner="w1", limit=1, lease_seconds=LEASE, models=["m"], fair=fair)
    stored, claimed = await store.insert_and_claim(
        make_job(service_class=ServiceClass.INTERACTIVE), order, now=T0
    )
    assert [j.id for j in claimed] == [waiting.id]
    left = await store.get_job(stored.id, tenant=None)
    assert left is not None and left.state is JobState.QUEUED and left.owner is None


async def test_insert_and_claim_of_a_taken_id_stores_and_claims_nothing(store: JobStore) -> None:
    first = await store.insert_job(make_job())
    order = ClaimOrder(owner="w1", limit=4, lease_seconds=LEASE)
    twin = make_job(text="another")
    with pytest.raises(Conflict):
        await store.insert_and_claim(dataclasses.replace(twin, id=first.id), order, now=T0)
    kept = await store.get_job(first.id, tenant=None)
    assert kept == first
    assert [j.id for j in await claim(store)] == [first.id]


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
    reclaimed = await store.claim(ClaimOrder(owner="w2", limit=1, lease_seconds=LEASE), now=later)
    assert [j.id for j in reclaimed] == [first.id]  # priority 1 beats the queued priority 0
    job = reclaimed[0]
    assert job.attempt == 2 and job.owner == "w2" and job.retries == 1
    assert job.error is not None and job.error.code == "worker_lost"
    # the old worker's lease no longer works
    assert not await store.complete(lease_of(first), RESULT, now=later)
    assert await store.complete(lease_of(job), RESULT, now=later)
    assert (await claim(store, now=later))[0].id == low.id


@pytest.mark.parametrize("fair", [False, True])
async def test_one_engines_claim_does_not_hide_anothers_expired_lease(
    store: JobStore, fair: bool
) -> None:
    # each engine claims for its own model, at once one after the other (two claim loops
    # that poll together); the second must still find its own model's expired lease
    await store.insert_job(make_job(model="chat"))
    (running,) = await claim(store, models=["chat"], fair=fair)
    later = T0 + LEASE + 1
    assert await claim(store, now=later, models=["embed"], fair=fair) == []
    rescued = await claim(store, now=later + 0.1, models=["chat"], fair=fair)
    assert [(j.id, j.attempt) for j in rescued] == [(running.id, 2)]


async def test_renewed_lease_is_not_reclaimed(store: JobStore) -> None:
    await store.insert_job(make_job())
    (job,) = await claim(store)
    held = await store.renew_leases([lease_of(job)], until=T0 + 2 * LEASE)
    assert held == {job.id}
    assert (
        await store.claim(ClaimOrder(owner="w2", limit=1, lease_seconds=LEASE), now=T0 + LEASE + 1)
        == []
    )


async def test_attempts_run_out_and_the_last_error_is_kept(store: JobStore) -> None:
    job = await store.insert_job(make_job(max_attempts=2))
    now = T0
    for attempt in (1, 2):
        (got,) = await store.claim(
            ClaimOrder(owner=f"w{attempt}", limit=1, lease_seconds=LEASE), now=now
        )
        assert got.attempt == attempt
        now += LEASE + 1
    assert await store.claim(ClaimOrder(owner="w3", limit=1, lease_seconds=LEASE), now=now) == []
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


async def test_requeue_gives_a_preempted_job_back_without_using_an_attempt(
    store: JobStore,
) -> None:
    first = await store.insert_job(make_job(priority=0, max_attempts=1))
    await store.insert_job(make_job(priority=0))
    (got,) = await claim(store, limit=1)
    assert got.id == first.id and got.attempt == 1
    assert await store.requeue(lease_of(got))
    back = await store.get_job(first.id, tenant=None)
    assert back is not None
    assert (back.state, back.attempt, back.owner) == (JobState.QUEUED, 0, None)
    # it keeps its place: claimed again before the job submitted after it
    (again,) = await claim(store, limit=1)
    assert again.id == first.id and again.attempt == 1
    # fenced: the old lease no longer works, the new one does
    assert not await store.requeue(Lease(got.id, "someone-else", 1))
    assert await store.complete(lease_of(again), RESULT, now=T0)
    assert not await store.requeue(lease_of(again))


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
        outcome = await store.finish(job.id, Ending(JobState.CANCELLED), tenant="t1", now=T0)
        assert outcome is not None
        assert outcome[1].state is JobState.CANCELLED
        assert outcome[1].owner is None
    again = await store.finish(queued.id, Ending(JobState.EXPIRED), tenant="t1", now=T0)
    assert again is not None
    before, after = again
    assert before.state is after.state is JobState.CANCELLED


async def test_cancelled_running_job_loses_its_lease(store: JobStore) -> None:
    await store.insert_job(make_job())
    (job,) = await claim(store)
    await store.finish(job.id, Ending(JobState.CANCELLED), tenant=None, now=T0)
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
    cancelled = await store.cancel_queued(tenant="t1", model="m", now=T0)
    assert len(cancelled) == 2 and {j.state for j in cancelled} == {JobState.CANCELLED}
    metrics = await store.metrics(tenant="t1", model="m")
    assert (metrics.running, metrics.waiting, metrics.total) == (1, 0, 3)
    assert (await store.metrics(tenant="t2", model=None)).waiting == 1


async def test_count_active_groups_unfinished_jobs_of_every_tenant(store: JobStore) -> None:
    assert await store.count_active() == []
    for tenant in ("t1", "t2"):
        await store.insert_job(make_job(tenant=tenant))
    await store.insert_job(make_job(service_class=ServiceClass.INTERACTIVE))
    await store.insert_job(make_job(model="other"))
    batch = make_batch()
    await store.insert_rows([make_row(batch, 1), make_row(batch, 2)])
    await store.insert_job(make_row(batch, 3, state=JobState.QUEUED))
    done = await store.insert_job(make_job())
    await store.finish(done.id, Ending(JobState.CANCELLED), tenant=None, now=T0)
    (running,) = await claim(store, limit=1, models=["m"])
    assert running.service_class is ServiceClass.INTERACTIVE

    got = {
        (c.model, c.service_class, c.state, c.in_batch): c.count for c in await store.count_active()
    }
    assert got == {
        ("m", ServiceClass.ASYNC, JobState.QUEUED, False): 2,
        ("m", ServiceClass.INTERACTIVE, JobState.RUNNING, False): 1,
        ("other", ServiceClass.ASYNC, JobState.QUEUED, False): 1,
        ("m", ServiceClass.BATCH, JobState.VALIDATING, True): 2,
        ("m", ServiceClass.BATCH, JobState.QUEUED, True): 1,
    }
    assert await store.complete(lease_of(running), RESULT, now=T0)
    assert all(c.state is not JobState.RUNNING for c in await store.count_active())


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


async def test_embed_job_round_trip(store: JobStore) -> None:
    job = make_job().evolve(request=EmbedRequest(inputs=("one", "two")))
    stored = await store.insert_job(job)
    assert await store.get_job(job.id, tenant="t1") == stored
    (claimed,) = await claim(store)
    assert claimed.request == EmbedRequest(inputs=("one", "two"))
    result = EmbedResult(vectors=((0.25, -1.5), (3.0, 0.125)), usage=Usage(prompt_tokens=4))
    assert await store.complete(lease_of(claimed), result, now=T0 + 1)
    done = await store.get_job(job.id, tenant="t1")
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    assert done.result == result
    assert isinstance(done.result, EmbedResult)
    assert done.usage == Usage(prompt_tokens=4)


# -- files and datasets ----------------------------------------------------------------


def make_file(
    file_id: str | None = None,
    *,
    tenant: str = "t1",
    kind: str = "file",
    purpose: str = "batch",
    created_at: float = T0,
) -> FileRecord:
    return FileRecord(
        id=file_id or "file-" + uuid.uuid4().hex,
        tenant=tenant,
        kind=kind,
        purpose=purpose,
        filename="input.jsonl",
        bytes=1234,
        created_at=created_at,
        status="uploading",
        meta={"displayName": "Input", "files": {"a.jsonl": 10}},
    )


async def test_file_insert_get_update_delete(store: JobStore) -> None:
    record = make_file()
    stored = await store.insert_file(record)
    assert stored is not None and stored.seq > 0
    assert stored == record.evolve(seq=stored.seq)
    assert await store.get_file(record.id, tenant="t1") == stored
    assert await store.insert_file(record.evolve(filename="again.jsonl")) is None
    assert await store.get_file(record.id, tenant="t1") == stored

    changed = stored.evolve(
        filename="renamed.jsonl",
        bytes=99,
        status="ready",
        meta={"exampleCount": 3},
        purpose="ignored",  # only filename, bytes, status and meta are replaced
    )
    assert await store.update_file(changed)
    assert await store.get_file(record.id, tenant="t1") == changed.evolve(purpose="batch")
    assert not await store.update_file(make_file("file-missing"))

    assert await store.delete_file(record.id, tenant="t1")
    assert await store.get_file(record.id, tenant="t1") is None
    assert not await store.delete_file(record.id, tenant="t1")


async def test_files_belong_to_their_tenant(store: JobStore) -> None:
    mine = await store.insert_file(make_file("file-1", tenant="a"))
    assert mine is not None
    assert await store.get_file("file-1", tenant="b") is None
    assert not await store.update_file(mine.evolve(tenant="b", filename="x"))
    assert not await store.delete_file("file-1", tenant="b")
    assert await store.list_files(FileFilter(tenant="b", kind="file", limit=10)) == []
    # the same id in another tenant is another file
    theirs = await store.insert_file(make_file("file-1", tenant="b"))
    assert theirs is not None
    assert await store.get_file("file-1", tenant="a") == mine
    assert await store.get_file("file-1", tenant="b") == theirs


async def test_list_files_newest_first_in_pages(store: JobStore) -> None:
    ids = []
    for i in range(5):
        stored = await store.insert_file(
            make_file(purpose="batch" if i % 2 == 0 else "batch_output", created_at=T0 + i)
        )
        assert stored is not None
        ids.append(stored.id)
    dataset = await store.insert_file(make_file(kind="dataset", purpose="dataset"))
    await store.insert_file(make_file(tenant="t2"))
    newest_first = ids[::-1]

    async def files(**kw: Any) -> list[FileRecord]:
        return await store.list_files(FileFilter(tenant="t1", kind="file", **kw))

    listed = await files(limit=10)
    assert [f.id for f in listed] == newest_first
    page1 = await files(limit=2)
    page2 = await files(limit=2, after=page1[-1].id)
    page3 = await files(limit=2, after=page2[-1].id)
    assert [f.id for f in page1 + page2 + page3] == newest_first
    assert await files(limit=2, after=ids[0]) == []
    assert await files(limit=2, after="file-gone") == []

    outputs = await files(limit=10, purpose="batch_output")
    assert [f.id for f in outputs] == [ids[3], ids[1]]
    after = await files(limit=10, purpose="batch", after=ids[3])
    assert [f.id for f in after] == [ids[2], ids[0]]
    assert dataset is not None
    assert await store.list_files(FileFilter(tenant="t1", kind="dataset", limit=10)) == [dataset]


# -- batches ---------------------------------------------------------------------------


def make_batch(
    batch_id: str | None = None,
    *,
    tenant: str = "t1",
    dialect: str = "openai",
    state: JobState = JobState.VALIDATING,
    idempotency_key: str | None = None,
    created_at: float = T0,
) -> Batch:
    return Batch(
        id=batch_id or "batch_" + uuid.uuid4().hex,
        tenant=tenant,
        dialect=dialect,
        model=None,
        endpoint="/v1/chat/completions",
        state=state,
        input_file_id="file-in",
        created_at=created_at,
        expires_at=created_at + 86_400,
        idempotency_key=idempotency_key,
    )


async def test_batch_round_trips_every_field(store: JobStore) -> None:
    batch = Batch(
        id="batch_full",
        tenant="t1",
        dialect="fireworks",
        model="m",
        endpoint="/v1/embeddings",
        state=JobState.FINALIZING,
        input_file_id="ds-in",
        created_at=T0 + 0.125,
        expires_at=T0 + 86_400.5,
        params={"max_tokens": 16, "temperature": 0.25, "top_k": None},
        meta={"metadata": {"k": "v"}, "displayName": "Nightly", "n": [1, 2.5]},
        final_state=JobState.CANCELLED,
        errors=[{"code": "invalid", "message": "bad line", "line": 3, "param": None}],
        error=JobError("expired", "ran out of time"),
        output_file_id="file-out",
        error_file_id="file-err",
        total=7,
        counts=BatchCounts(total=7, succeeded=5, failed=1, cancelled=1, prompt_tokens=40),
        continued_from="batch_before",
        idempotency_key="key-1",
        validated_at=T0 + 1,
        started_at=T0 + 2,
        finalizing_at=T0 + 3,
        cancelling_at=T0 + 4,
        finished_at=T0 + 5,
        updated_at=T0 + 6,
        owner="runner-1",
        lease_expires_at=T0 + 30,
        row_ids=1,
    )
    stored, created = await store.insert_batch(batch)
    assert created and stored.seq > 0
    assert stored == batch.evolve(seq=stored.seq)
    assert await store.get_batch("batch_full", tenant="t1") == stored
    assert await store.get_batch("batch_full", tenant=None) == stored

    bare = make_batch()
    stored_bare, _ = await store.insert_batch(bare)
    assert (
        await store.get_batch(bare.id, tenant="t1")
        == stored_bare
        == bare.evolve(seq=stored_bare.seq)
    )


async def test_insert_batch_is_idempotent_per_tenant_key(store: JobStore) -> None:
    first, created = await store.insert_batch(make_batch(idempotency_key="k"))
    assert created
    again, created = await store.insert_batch(make_batch(idempotency_key="k"))
    assert not created and again == first
    # a retry of the very same request (same id and key) finds the batch too
    again, created = await store.insert_batch(first.evolve(seq=0))
    assert not created and again == first
    assert len(await store.list_batches(BatchFilter(tenant="t1", dialect=None, limit=10))) == 1
    # another tenant's key is its own; no key never matches
    _, created = await store.insert_batch(make_batch(tenant="t2", idempotency_key="k"))
    assert created
    for _ in range(2):
        _, created = await store.insert_batch(make_batch())
        assert created
    assert len(await store.list_batches(BatchFilter(tenant="t1", dialect=None, limit=10))) == 3


async def test_insert_batch_with_a_taken_id_is_a_conflict(store: JobStore) -> None:
    await store.insert_batch(make_batch("batch_1"))
    with pytest.raises(Conflict):
        await store.insert_batch(make_batch("batch_1"))
    with pytest.raises(Conflict):
        await store.insert_batch(make_batch("batch_1", idempotency_key="fresh"))
    # the key of the refused batch was not taken
    _, created = await store.insert_batch(make_batch(idempotency_key="fresh"))
    assert created
    # another tenant may use the id
    _, created = await store.insert_batch(make_batch("batch_1", tenant="t2"))
    assert created


async def test_concurrent_inserts_with_one_key_create_one_batch(store: JobStore) -> None:
    outcomes = await asyncio.gather(
        *(store.insert_batch(make_batch(idempotency_key="same")) for _ in range(5))
    )
    assert sum(created for _, created in outcomes) == 1
    assert len({batch.id for batch, _ in outcomes}) == 1


async def test_get_batch_by_tenant(store: JobStore) -> None:
    batch, _ = await store.insert_batch(make_batch(tenant="a"))
    assert await store.get_batch(batch.id, tenant="a") == batch
    assert await store.get_batch(batch.id, tenant=None) == batch
    assert await store.get_batch(batch.id, tenant="b") is None
    assert await store.get_batch("batch_missing", tenant=None) is None


async def test_list_batches_newest_first_in_pages_with_filters(store: JobStore) -> None:
    ids = []
    for i, state in enumerate(
        [JobState.VALIDATING, JobState.QUEUED, JobState.SUCCEEDED, JobState.QUEUED]
    ):
        batch, _ = await store.insert_batch(
            make_batch(state=state, dialect="openai" if i < 3 else "fireworks")
        )
        ids.append(batch.id)
    other, _ = await store.insert_batch(make_batch(tenant="t2"))
    newest_first = ids[::-1]

    async def listed(**kw: object) -> list[str]:
        args: dict[str, object] = {"tenant": "t1", "dialect": None, "limit": 10, **kw}
        return [b.id for b in await store.list_batches(BatchFilter(**args))]  # type: ignore[arg-type]

    assert await listed() == newest_first
    assert await listed(limit=2) == newest_first[:2]
    assert await listed(limit=2, after=newest_first[1]) == newest_first[2:]
    assert await listed(after=ids[0]) == []
    assert await listed(after="batch_gone") == []
    assert await listed(dialect="fireworks") == [ids[3]]
    queued = frozenset({JobState.QUEUED})
    assert await listed(states=queued) == [ids[3], ids[1]]
    assert await listed(states=queued, after=ids[3]) == [ids[1]]
    assert await listed(states=frozenset({JobState.SUCCEEDED, JobState.VALIDATING})) == [
        ids[2],
        ids[0],
    ]
    assert await listed(tenant=None) == [other.id, *newest_first]
    assert await listed(tenant=None, after=other.id, limit=1) == [ids[3]]
    assert await listed(tenant="t2", after=ids[3]) == []  # another tenant's batch


async def test_active_batches_skip_terminal_and_leased(store: JobStore) -> None:
    validating, _ = await store.insert_batch(make_batch(tenant="a"))
    running, _ = await store.insert_batch(make_batch(tenant="b", state=JobState.QUEUED))
    leased, _ = await store.insert_batch(make_batch(state=JobState.FINALIZING))
    await store.insert_batch(make_batch(state=JobState.SUCCEEDED))
    await store.insert_batch(make_batch(state=JobState.CANCELLED))
    assert await store.lease_batch(leased, owner="r1", now=T0, until=T0 + LEASE)

    active = await store.active_batches(now=T0, limit=10, workflows=False)
    assert [b.id for b in active] == [validating.id, running.id]
    first = await store.active_batches(now=T0, limit=1, workflows=False)
    assert [b.id for b in first] == [validating.id]
    # once the lease runs out the batch is free again, with its lease shown
    later = await store.active_batches(now=T0 + LEASE + 1, limit=10, workflows=False)
    assert [b.id for b in later] == [validating.id, running.id, leased.id]
    assert (later[2].owner, later[2].lease_expires_at) == ("r1", T0 + LEASE)


async def test_active_batches_of_one_kind_in_pages(store: JobStore) -> None:
    """Each runner reads only its own kind, page by page: a backlog of workflow jobs
    (dialect 'unstructured') never hides a batch, nor batches a workflow job."""
    workflows = [
        (await store.insert_batch(make_batch(tenant="w", dialect="unstructured")))[0]
        for _ in range(5)
    ]
    openai, _ = await store.insert_batch(make_batch(tenant="a"))
    fireworks, _ = await store.insert_batch(make_batch(tenant="b", dialect="fireworks"))
    late, _ = await store.insert_batch(make_batch(tenant="w", dialect="unstructured"))
    await store.insert_batch(make_batch(dialect="unstructured", state=JobState.SUCCEEDED))
    assert await store.lease_batch(workflows[1], owner="r1", now=T0, until=T0 + LEASE)

    async def ids(**kw: Any) -> list[str]:
        return [b.id for b in await store.active_batches(now=T0, **kw)]

    # five older workflow jobs do not push the batches out of a page of two
    assert await ids(limit=2, workflows=False) == [openai.id, fireworks.id]
    assert await ids(limit=10, workflows=False) == [openai.id, fireworks.id]
    free = [workflows[0].id, *(w.id for w in workflows[2:]), late.id]
    assert await ids(limit=10, workflows=True) == free
    # pages: after the seq of the last record of the page before
    page = await store.active_batches(now=T0, limit=2, workflows=True)
    assert [b.id for b in page] == free[:2]
    assert await ids(limit=2, workflows=True, after=page[-1].seq) == free[2:4]
    assert await ids(limit=10, workflows=True, after=late.seq) == []
    assert await ids(limit=10, workflows=False, after=openai.seq) == [fireworks.id]


async def test_lease_batch_has_one_holder_at_a_time(store: JobStore) -> None:
    batch, _ = await store.insert_batch(make_batch())
    won = await asyncio.gather(
        store.lease_batch(batch, owner="r1", now=T0, until=T0 + LEASE),
        store.lease_batch(batch, owner="r2", now=T0, until=T0 + LEASE),
    )
    assert sorted(won) == [False, True]
    holder, other = ("r1", "r2") if won[0] else ("r2", "r1")
    assert not await store.lease_batch(batch, owner=other, now=T0 + 1, until=T0 + 1 + LEASE)
    # the holder extends it
    assert await store.lease_batch(batch, owner=holder, now=T0 + 10, until=T0 + 2 * LEASE)
    got = await store.get_batch(batch.id, tenant="t1")
    assert got is not None and (got.owner, got.lease_expires_at) == (holder, T0 + 2 * LEASE)
    assert not await store.lease_batch(batch, owner=other, now=T0 + LEASE + 1, until=T0 + 99)
    # expired: the other takes it
    later = T0 + 2 * LEASE + 1
    assert await store.lease_batch(batch, owner=other, now=later, until=later + LEASE)
    assert not await store.lease_batch(batch, owner=holder, now=later, until=later + LEASE)
    got = await store.get_batch(batch.id, tenant="t1")
    assert got is not None and (got.owner, got.lease_expires_at) == (other, later + LEASE)


async def test_lease_batch_needs_a_live_batch(store: JobStore) -> None:
    done, _ = await store.insert_batch(make_batch(state=JobState.EXPIRED))
    assert not await store.lease_batch(done, owner="r1", now=T0, until=T0 + LEASE)
    missing = make_batch()
    assert not await store.lease_batch(missing, owner="r1", now=T0, until=T0 + LEASE)
    theirs, _ = await store.insert_batch(make_batch(tenant="t2"))
    assert not await store.lease_batch(
        theirs.evolve(tenant="t1"), owner="r1", now=T0, until=T0 + LEASE
    )


async def test_update_batch_compares_and_sets_the_state(store: JobStore) -> None:
    batch, _ = await store.insert_batch(make_batch())
    assert await store.lease_batch(batch, owner="r1", now=T0, until=T0 + LEASE)
    started = batch.evolve(
        state=JobState.QUEUED,
        total=3,
        validated_at=T0 + 1,
        meta={"metadata": {"a": "b"}},
        owner="someone-else",  # the lease and seq are not the caller's to write
        lease_expires_at=None,
        seq=batch.seq + 1000,
    )
    assert not await store.update_batch(started, expect=JobState.QUEUED)
    unchanged = await store.get_batch(batch.id, tenant="t1")
    assert unchanged is not None and unchanged.state is JobState.VALIDATING
    assert unchanged.total == 0

    assert await store.update_batch(started, expect=JobState.VALIDATING)
    got = await store.get_batch(batch.id, tenant="t1")
    assert got == started.evolve(seq=batch.seq, owner="r1", lease_expires_at=T0 + LEASE)
    # a second writer that read the old state loses
    assert not await store.update_batch(
        batch.evolve(state=JobState.FAILED), expect=JobState.VALIDATING
    )
    assert not await store.update_batch(make_batch(), expect=JobState.VALIDATING)


async def test_count_open_batches(store: JobStore) -> None:
    for state in (JobState.VALIDATING, JobState.QUEUED, JobState.FINALIZING):
        await store.insert_batch(make_batch(state=state))
    cancelling, _ = await store.insert_batch(make_batch(state=JobState.CANCELLING))
    for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.EXPIRED):
        await store.insert_batch(make_batch(state=state))
    await store.insert_batch(make_batch(tenant="t2"))
    assert await store.count_open_batches(tenant="t1") == 4
    assert await store.update_batch(
        cancelling.evolve(state=JobState.CANCELLED), expect=JobState.CANCELLING
    )
    assert await store.count_open_batches(tenant="t1") == 3
    assert await store.count_open_batches(tenant="nobody") == 0


# -- batch rows --------------------------------------------------------------------------


def make_row(
    batch: Batch,
    line: int,
    *,
    custom_id: str | None = None,
    state: JobState = JobState.VALIDATING,
) -> Job:
    return make_job(tenant=batch.tenant, service_class=ServiceClass.BATCH).evolve(
        state=state,
        batch_id=batch.id,
        custom_id=custom_id if custom_id is not None else f"req-{line}",
        batch_line=line,
    )


async def rows_of(store: JobStore, batch: Batch, **kw: object) -> list[Job]:
    args: dict[str, object] = {"after_line": 0, "limit": 1000, **kw}
    return await store.batch_rows(RowFilter(tenant=batch.tenant, batch_id=batch.id, **args))  # type: ignore[arg-type]


async def test_insert_job_keeps_batch_fields(store: JobStore) -> None:
    batch = make_batch()
    jobs = [make_row(batch, line, state=JobState.QUEUED) for line in (1, 2, 3)]
    stored = await asyncio.gather(*(store.insert_job(job) for job in jobs))
    for job, got in zip(jobs, stored, strict=True):
        assert got == job.evolve(seq=got.seq)
        assert await store.get_job(job.id, tenant=batch.tenant) == got


async def test_insert_rows_skips_existing_ids(store: JobStore) -> None:
    batch = make_batch()
    first = [make_row(batch, line) for line in (1, 2, 3)]
    await store.insert_rows(first)
    again = [first[0].evolve(custom_id="changed"), first[2], make_row(batch, 4)]
    await store.insert_rows(again)
    await store.insert_rows([])
    got = await rows_of(store, batch)
    assert [r.evolve(seq=0) for r in got] == [*first, again[2]]
    assert all(r.seq > 0 for r in got)
    assert len({r.seq for r in got}) == 4
    one = await store.get_job(first[1].id, tenant=batch.tenant)
    assert one is not None and (one.batch_id, one.custom_id, one.batch_line) == (
        batch.id,
        "req-2",
        2,
    )


async def test_insert_rows_takes_a_thousand_rows(store: JobStore) -> None:
    batch = make_batch()
    await store.insert_rows([make_row(batch, line) for line in range(1, 1001)])
    counts = await store.batch_counts(tenant=batch.tenant, batch_id=batch.id)
    assert (counts.total, counts.waiting) == (1000, 1000)
    page = await rows_of(store, batch, after_line=990, limit=5)
    assert [r.batch_line for r in page] == [991, 992, 993, 994, 995]


async def test_validating_rows_are_claimed_only_once_released(store: JobStore) -> None:
    batch, other = make_batch(), make_batch()
    await store.insert_rows([make_row(batch, line) for line in (1, 2, 3)])
    await store.insert_rows([make_row(other, 1)])
    assert await claim(store) == []
    assert await store.release_rows(tenant=batch.tenant, batch_id=batch.id) == 3
    assert await store.release_rows(tenant=batch.tenant, batch_id=batch.id) == 0
    assert await store.release_rows(tenant="t2", batch_id=other.id) == 0
    claimed = await claim(store)
    assert [(j.batch_id, j.batch_line) for j in claimed] == [
        (batch.id, 1),
        (batch.id, 2),
        (batch.id, 3),
    ]
    assert all(j.state is JobState.RUNNING for j in claimed)
    (still,) = await rows_of(store, other)
    assert still.state is JobState.VALIDATING


async def test_release_and_finish_rows_cover_many_chunks(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the SQLite adapter changes a batch's rows a chunk at a time: make chunks tiny
    monkeypatch.setattr(sqlite_store, "ROW_CHUNK", 2)
    batch = make_batch()
    await store.insert_rows([make_row(batch, line) for line in range(1, 8)])
    assert await store.release_rows(tenant=batch.tenant, batch_id=batch.id) == 7
    await store.insert_rows([make_row(batch, line) for line in (8, 9)])
    assert await store.release_rows(tenant=batch.tenant, batch_id=batch.id) == 2
    await claim(store, limit=1)
    error = JobError("expired", "the batch expired")
    n = await store.finish_rows(
        Ending(JobState.EXPIRED, error), tenant=batch.tenant, batch_id=batch.id, now=T0
    )
    assert n == 9
    counts = await store.batch_counts(tenant=batch.tenant, batch_id=batch.id)
    assert (counts.total, counts.cancelled) == (9, 9)


async def test_batch_counts_by_state_with_tokens_of_finished_rows(store: JobStore) -> None:
    batch, other = make_batch(), make_batch()
    await store.insert_rows([make_row(batch, line) for line in range(1, 9)])
    await store.insert_rows([make_row(other, 1, state=JobState.QUEUED)])
    empty = await store.batch_counts(tenant=batch.tenant, batch_id="batch_none")
    assert empty == BatchCounts()
    assert await store.batch_counts(tenant=batch.tenant, batch_id=batch.id) == BatchCounts(
        total=8, waiting=8
    )

    await store.release_rows(tenant=batch.tenant, batch_id=batch.id)
    rows = await rows_of(store, batch)
    await store.insert_rows([make_row(batch, 9)])  # still validating: waiting
    claimed = await claim(store, limit=6)
    assert [j.batch_line for j in claimed] == [1, 2, 3, 4, 5, 6]
    usage = Usage(prompt_tokens=10, completion_tokens=3, cached_tokens=2)
    for job in claimed[:2]:
        assert await store.complete(lease_of(job), ChatResult("ok", "stop", usage), now=T0)
    assert await store.fail(lease_of(claimed[2]), JobError("bad", "no"), now=T0, retry=False)
    await store.finish(rows[3].id, Ending(JobState.CANCELLED), tenant="t1", now=T0)
    await store.finish(rows[6].id, Ending(JobState.EXPIRED), tenant="t1", now=T0)
    # rows 5 and 6 run; 8 is queued, 9 validating
    counts = await store.batch_counts(tenant=batch.tenant, batch_id=batch.id)
    assert counts == BatchCounts(
        total=9,
        waiting=2,
        running=2,
        succeeded=2,
        failed=1,
        cancelled=2,
        prompt_tokens=20,
        completion_tokens=6,
        cached_tokens=4,
    )
    assert counts.done + counts.active == counts.total
    # another tenant's view of the batch is empty
    assert await store.batch_counts(tenant="t2", batch_id=batch.id) == BatchCounts()


async def test_batch_rows_in_line_order_with_a_state_filter(store: JobStore) -> None:
    batch = make_batch()
    lines = [5, 2, 8, 1, 7, 3, 6, 4]
    await store.insert_rows([make_row(batch, line) for line in lines])
    await store.insert_rows([make_row(make_batch(), line) for line in (1, 2)])
    pages: list[int] = []
    after = 0
    while page := await rows_of(store, batch, after_line=after, limit=3):
        assert len(page) <= 3
        pages += [r.batch_line or 0 for r in page]
        after = page[-1].batch_line or 0
    assert pages == list(range(1, 9))

    await store.release_rows(tenant=batch.tenant, batch_id=batch.id)
    await claim(store, limit=3)  # lines 5, 2, 8 were inserted first: they run
    running = frozenset({JobState.RUNNING})
    assert [r.batch_line for r in await rows_of(store, batch, states=running)] == [2, 5, 8]
    assert [r.batch_line for r in await rows_of(store, batch, states=running, after_line=2)] == [
        5,
        8,
    ]
    queued = await rows_of(store, batch, states=frozenset({JobState.QUEUED}), limit=2)
    assert [r.batch_line for r in queued] == [1, 3]
    assert await rows_of(store, batch, states=frozenset({JobState.SUCCEEDED})) == []
    assert await rows_of(store, batch.evolve(tenant="t2")) == []


async def test_duplicate_custom_ids(store: JobStore) -> None:
    batch = make_batch()
    ids = ["a", "b", "a", "c", "b", "a", "d"]
    await store.insert_rows(
        [make_row(batch, line, custom_id=cid) for line, cid in enumerate(ids, start=1)]
    )
    other = make_batch()
    await store.insert_rows([make_row(other, 1, custom_id="c"), make_row(other, 2, custom_id="d")])
    found = await store.duplicate_custom_ids(tenant=batch.tenant, batch_id=batch.id, limit=10)
    assert found == [("a", 1, 6), ("b", 2, 5)]
    assert await store.duplicate_custom_ids(tenant=batch.tenant, batch_id=batch.id, limit=1) == [
        ("a", 1, 6)
    ]
    assert await store.duplicate_custom_ids(tenant=other.tenant, batch_id=other.id, limit=10) == []


async def test_finish_rows_touches_only_unfinished_rows(store: JobStore) -> None:
    batch, other = make_batch(), make_batch()
    await store.insert_rows([make_row(batch, line) for line in (1, 2, 3, 4)])
    await store.insert_rows([make_row(other, 1)])
    await store.release_rows(tenant=batch.tenant, batch_id=batch.id)
    done, running = await claim(store, limit=2)
    assert await store.complete(lease_of(done), RESULT, now=T0)
    await store.insert_rows([make_row(batch, 5)])  # validating
    # lines 3 and 4 queued
    error = JobError("batch_cancelled", "the batch was cancelled")
    n = await store.finish_rows(
        Ending(JobState.CANCELLED, error), tenant=batch.tenant, batch_id=batch.id, now=T0 + 5
    )
    assert n == 4
    rows = {r.batch_line: r for r in await rows_of(store, batch)}
    assert rows[1].state is JobState.SUCCEEDED and rows[1].error is None
    assert rows[1].finished_at == T0
    for line in (2, 3, 4, 5):
        row = rows[line]
        assert (row.state, row.error, row.finished_at, row.owner) == (
            JobState.CANCELLED,
            error,
            T0 + 5,
            None,
        )
    # the running row's worker has lost it
    assert not await store.complete(lease_of(running), RESULT, now=T0 + 6)
    assert await claim(store) == []
    (untouched,) = await rows_of(store, other)
    assert untouched.state is JobState.VALIDATING
    again = await store.finish_rows(
        Ending(JobState.EXPIRED, error), tenant=batch.tenant, batch_id=batch.id, now=T0 + 9
    )
    assert again == 0


async def test_cancel_queued_skips_batch_rows(store: JobStore) -> None:
    batch = make_batch()
    await store.insert_rows([make_row(batch, 1, state=JobState.QUEUED)])
    plain = await store.insert_job(make_job())
    assert [j.id for j in await store.cancel_queued(tenant="t1", model="m", now=T0)] == [plain.id]
    cancelled = await store.get_job(plain.id, tenant="t1")
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    (row,) = await rows_of(store, batch)
    assert row.state is JobState.QUEUED


async def test_delete_batch_removes_its_rows(store: JobStore) -> None:
    batch, _ = await store.insert_batch(make_batch())
    kept, _ = await store.insert_batch(make_batch())
    await store.insert_rows([make_row(batch, line) for line in (1, 2, 3)])
    await store.insert_rows([make_row(kept, 1)])
    plain = await store.insert_job(make_job())
    assert not await store.delete_batch(batch.id, tenant="t2")
    assert len(await rows_of(store, batch)) == 3
    assert await store.delete_batch(batch.id, tenant="t1")
    assert await store.get_batch(batch.id, tenant=None) is None
    assert await rows_of(store, batch) == []
    assert await store.batch_counts(tenant="t1", batch_id=batch.id) == BatchCounts()
    assert len(await rows_of(store, kept)) == 1
    assert await store.get_job(plain.id, tenant="t1") is not None
    assert not await store.delete_batch(batch.id, tenant="t1")
    # rows of a batch that has no record stay (nothing to delete them with)
    orphan = make_batch()
    await store.insert_rows([make_row(orphan, 1)])
    assert not await store.delete_batch(orphan.id, tenant="t1")
    assert len(await rows_of(store, orphan)) == 1


# -- deleting a job (OpenAI responses, issue 17) ---------------------------------------------


async def test_delete_job_removes_the_tenants_job_but_never_a_batch_row(store: JobStore) -> None:
    job = await store.insert_job(make_job())
    batch = make_batch()
    row = await store.insert_job(make_row(batch, 1, state=JobState.QUEUED))
    assert not await store.delete_job(job.id, tenant="t2")
    assert not await store.delete_job(row.id, tenant=row.tenant)
    assert await store.delete_job(job.id, tenant="t1")
    assert await store.get_job(job.id, tenant=None) is None
    assert not await store.delete_job(job.id, tenant="t1")
    assert await store.get_job(row.id, tenant=None) is not None
