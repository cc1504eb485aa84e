"""The webhook and retention parts of the store contract, on memory, SQLite and PostgreSQL.

The outbox is written by the store itself with each terminal change (triggers in SQL,
the same rule in the fake): these tests end jobs and batches through the ordinary
store calls and look for the entries.
"""

from __future__ import annotations

import uuid

from inferq.core.models import FileRecord, JobError
from inferq.core.ports import ClaimOrder, Ending
from inferq.core.states import JobState, ServiceClass
from inferq.core.webhooks import (
    DEFAULT_KINDS,
    DELIVERED,
    FAILED,
    PENDING,
    Attempt,
    Endpoint,
    deliveries_for,
)
from inferq.store.base import JobStore
from tests.contract import test_store_contract as base
from tests.contract.test_store_contract import LEASE, RESULT, T0, lease_of, make_batch, make_job

#: the store contract's fixture: memory, SQLite and PostgreSQL
store = base.store


def endpoint(tenant: str = "t1", events: tuple[str, ...] = ()) -> Endpoint:
    return Endpoint(
        id="we_" + uuid.uuid4().hex,
        tenant=tenant,
        url="https://example.com/hook",
        events=events,
        secret="whsec_c2VjcmV0",
        created_at=T0,
    )


async def test_a_job_that_ends_writes_one_outbox_entry_for_a_tenant_with_endpoints(
    store: JobStore,
) -> None:
    await store.insert_endpoint(endpoint("t1"))
    done = await store.insert_job(make_job(tenant="t1"))
    failed = await store.insert_job(make_job(tenant="t1"))
    other = await store.insert_job(make_job(tenant="t2"))  # no endpoint: no entry
    sync = await store.insert_job(make_job(tenant="t1", service_class=ServiceClass.INTERACTIVE))
    claimed = {
        j.id: j
        for j in await store.claim(ClaimOrder(owner="w", limit=10, lease_seconds=LEASE), now=T0)
    }
    assert await store.complete(lease_of(claimed[done.id]), RESULT, now=T0 + 1)
    assert await store.fail(
        lease_of(claimed[failed.id]), JobError("x", "boom"), now=T0 + 1, retry=False
    )
    assert await store.complete(lease_of(claimed[other.id]), RESULT, now=T0 + 1)
    assert await store.complete(lease_of(claimed[sync.id]), RESULT, now=T0 + 1)
    entries = await store.outbox(limit=10)
    assert [(e.subject_id, e.state, e.source, e.origin) for e in entries] == [
        (done.id, JobState.SUCCEEDED, "job", "test"),
        (failed.id, JobState.FAILED, "job", "test"),
    ]
    assert entries[0].id.startswith("evt_") and entries[0].id != entries[1].id
    assert entries[0].tenant == "t1" and entries[0].created_at > 0


async def test_cancels_expiries_and_clears_write_entries_and_a_retry_does_not(
    store: JobStore,
) -> None:
    await store.insert_endpoint(endpoint("t1"))
    cancelled = await store.insert_job(make_job())
    overdue = await store.insert_job(make_job(deadline_at=T0 + 5))
    cleared = await store.insert_job(make_job(model="m2"))
    retried = await store.insert_job(make_job(model="m3"))
    await store.finish(cancelled.id, Ending(JobState.CANCELLED), tenant="t1", now=T0 + 1)
    assert await store.expire_overdue(now=T0 + 10) == [overdue.id]
    assert [j.id for j in await store.cancel_queued(tenant="t1", model="m2", now=T0 + 11)] == [
        cleared.id
    ]
    [job] = await store.claim(
        ClaimOrder(owner="w", limit=1, lease_seconds=LEASE, models={"m3"}), now=T0 + 12
    )
    assert await store.fail(lease_of(job), JobError("x", "again"), now=T0 + 13, retry=True)
    # cancelling it again changes nothing and writes nothing
    await store.finish(cancelled.id, Ending(JobState.CANCELLED), tenant="t1", now=T0 + 14)
    entries = await store.outbox(limit=10)
    assert [(e.subject_id, e.state) for e in entries] == [
        (cancelled.id, JobState.CANCELLED),
        (overdue.id, JobState.EXPIRED),
        (cleared.id, JobState.CANCELLED),
    ]
    assert retried.id not in {e.subject_id for e in entries}


async def test_a_batch_row_writes_no_entry_and_its_batch_one(store: JobStore) -> None:
    await store.insert_endpoint(endpoint("t1"))
    batch, _ = await store.insert_batch(make_batch())
    row = make_job().evolve(batch_id=batch.id, custom_id="r1", batch_line=1)
    await store.insert_rows([row])
    await store.finish_rows(
        Ending(JobState.CANCELLED, JobError("cancelled", "x")),
        tenant="t1",
        batch_id=batch.id,
        now=T0,
    )
    assert await store.update_batch(batch.evolve(state=JobState.QUEUED), expect=batch.state)
    assert await store.outbox(limit=10) == []
    ended = batch.evolve(state=JobState.SUCCEEDED, finished_at=T0 + 5)
    assert await store.update_batch(ended, expect=JobState.QUEUED)
    [entry] = await store.outbox(limit=10)
    assert (entry.source, entry.subject_id, entry.origin, entry.state) == (
        "batch",
        batch.id,
        "openai",
        JobState.SUCCEEDED,
    )
    assert DEFAULT_KINDS.event_type(entry) == "batch.completed"


async def test_fan_out_is_idempotent_and_removes_the_entry(store: JobStore) -> None:
    first, second = endpoint("t1"), endpoint("t1", events=("job.failed",))
    for e in (first, second, endpoint("t2")):
        await store.insert_endpoint(e)
    job = await store.insert_job(make_job())
    await store.finish(job.id, Ending(JobState.CANCELLED), tenant="t1", now=T0)
    [entry] = await store.outbox(limit=10)
    endpoints = await store.list_endpoints(tenant=None)
    made = deliveries_for(entry, DEFAULT_KINDS.event_type(entry) or "job.cancelled", endpoints)
    assert [d.endpoint_id for d in made] == [first.id]  # the second wants job.failed only
    await store.fan_out(entry, made)
    # a second process fanning out the same entry (new delivery ids) adds nothing
    again = deliveries_for(entry, "job.cancelled", endpoints)
    await store.fan_out(entry, again)
    assert await store.outbox(limit=10) == []
    [stored] = await store.list_deliveries(endpoint_id=first.id, tenant="t1", limit=10)
    assert stored.id == made[0].id and stored.state == PENDING and stored.attempts == 0
    assert stored.event_id == entry.id and stored.subject_id == job.id


async def delivery_for(store: JobStore, ep: Endpoint) -> str:
    await store.insert_endpoint(ep)
    job = await store.insert_job(make_job(tenant=ep.tenant))
    await store.finish(job.id, Ending(JobState.CANCELLED), tenant=ep.tenant, now=T0)
    [entry] = await store.outbox(limit=10)
    [made] = deliveries_for(entry, (ep.events or ("job.cancelled",))[0], [ep])
    await store.fan_out(entry, [made.evolve(next_at=T0)])
    return made.id


async def test_a_claimed_delivery_is_leased_to_one_owner(store: JobStore) -> None:
    ep = endpoint()
    delivery_id = await delivery_for(store, ep)
    [claimed] = await store.claim_deliveries(owner="a", now=T0, until=T0 + 60, limit=5)
    assert claimed.delivery.id == delivery_id
    assert (claimed.url, claimed.secret) == (ep.url, ep.secret)
    assert await store.claim_deliveries(owner="b", now=T0 + 30, until=T0 + 90, limit=5) == []
    # the lease ran out (a deliverer killed mid-attempt): another owner takes it
    [again] = await store.claim_deliveries(owner="b", now=T0 + 61, until=T0 + 121, limit=5)
    assert again.delivery.id == delivery_id
    late = Attempt(
        delivery_id=delivery_id, owner="a", at=T0 + 62, state=DELIVERED, next_at=T0 + 62,
        status=200, error=None,
    )  # fmt: skip
    assert not await store.record_attempt(late)  # fenced: "a" no longer holds it


async def test_attempts_move_a_delivery_on_and_end_it(store: JobStore) -> None:
    ep = endpoint()
    delivery_id = await delivery_for(store, ep)
    await store.claim_deliveries(owner="a", now=T0, until=T0 + 60, limit=5)
    retry = Attempt(
        delivery_id=delivery_id, owner="a", at=T0 + 1, state=PENDING, next_at=T0 + 10,
        status=500, error="server error",
    )  # fmt: skip
    assert await store.record_attempt(retry)
    assert await store.claim_deliveries(owner="a", now=T0 + 5, until=T0 + 65, limit=5) == []
    [claimed] = await store.claim_deliveries(owner="a", now=T0 + 10, until=T0 + 70, limit=5)
    assert claimed.delivery.attempts == 1 and claimed.delivery.last_status == 500
    done = Attempt(
        delivery_id=delivery_id, owner="a", at=T0 + 11, state=DELIVERED, next_at=T0 + 11,
        status=204, error=None,
    )  # fmt: skip
    assert await store.record_attempt(done)
    assert not await store.record_attempt(done)  # no longer pending
    [d] = await store.list_deliveries(endpoint_id=ep.id, tenant=None, limit=5)
    assert (d.state, d.attempts, d.last_status, d.delivered_at) == (DELIVERED, 2, 204, T0 + 11)
    assert await store.claim_deliveries(owner="a", now=T0 + 999, until=T0 + 1100, limit=5) == []


async def test_a_failed_delivery_is_never_claimed_again(store: JobStore) -> None:
    ep = endpoint()
    delivery_id = await delivery_for(store, ep)
    await store.claim_deliveries(owner="a", now=T0, until=T0 + 60, limit=5)
    gave_up = Attempt(
        delivery_id=delivery_id, owner="a", at=T0 + 1, state=FAILED, next_at=T0 + 1,
        status=None, error="refused",
    )  # fmt: skip
    assert await store.record_attempt(gave_up)
    assert await store.claim_deliveries(owner="a", now=T0 + 9e6, until=T0 + 9e6, limit=5) == []


async def test_endpoints_are_listed_per_tenant_and_deleted_with_their_deliveries(
    store: JobStore,
) -> None:
    ep, other = endpoint("t1", events=("job.succeeded", "batch.completed")), endpoint("t2")
    await delivery_for(store, ep)
    await store.insert_endpoint(other)
    assert [e.id for e in await store.list_endpoints(tenant="t2")] == [other.id]
    [listed] = await store.list_endpoints(tenant="t1")
    assert listed == ep
    assert not await store.delete_endpoint(ep.id, tenant="t2")  # another tenant's: none
    assert await store.delete_endpoint(ep.id, tenant="t1")
    assert await store.list_deliveries(endpoint_id=ep.id, tenant=None, limit=5) == []
    assert await store.claim_deliveries(owner="a", now=T0 + 1, until=T0 + 60, limit=5) == []
    assert not await store.delete_endpoint(ep.id, tenant=None)


# -- retention ---------------------------------------------------------------------------


def a_file(file_id: str, *, expires_at: float | None, tenant: str = "t1") -> FileRecord:
    meta = {} if expires_at is None else {"expires_at": expires_at}
    return FileRecord(
        id=file_id, tenant=tenant, kind="file", purpose="batch", filename="in.jsonl",
        bytes=3, created_at=T0, meta=meta,
    )  # fmt: skip


async def test_expired_files_leave_out_the_input_of_an_open_batch(store: JobStore) -> None:
    for f in (
        a_file("file-old", expires_at=T0 + 10),
        a_file("file-in", expires_at=T0 + 5),  # read by the open batch below
        a_file("file-later", expires_at=T0 + 1000),
        a_file("file-forever", expires_at=None),
    ):
        await store.insert_file(f)
    batch, _ = await store.insert_batch(make_batch())  # input_file_id="file-in"
    assert [f.id for f in await store.expired_files(now=T0 + 100, limit=10)] == ["file-old"]
    assert await store.update_batch(batch.evolve(state=JobState.FAILED), expect=batch.state)
    found = await store.expired_files(now=T0 + 100, limit=10)
    assert [f.id for f in found] == ["file-in", "file-old"]
    assert found[1].meta["expires_at"] == T0 + 10


async def test_purge_jobs_deletes_old_finished_jobs_only(store: JobStore) -> None:
    old = await store.insert_job(make_job())
    young = await store.insert_job(make_job())
    running = await store.insert_job(make_job(model="busy"))
    node = await store.insert_job(make_job().evolve(origin="unstructured"))
    await store.finish(old.id, Ending(JobState.CANCELLED), tenant="t1", now=T0)
    await store.finish(node.id, Ending(JobState.CANCELLED), tenant="t1", now=T0)
    await store.finish(young.id, Ending(JobState.CANCELLED), tenant="t1", now=T0 + 500)
    await store.claim(ClaimOrder(owner="w", limit=1, lease_seconds=LEASE, models={"busy"}), now=T0)
    workflow, _ = await store.insert_batch(make_batch(dialect="unstructured"))
    # the node job waits while its tenant has an open workflow job
    assert await store.purge_jobs(cutoff=T0 + 100, limit=10, workflow_origin="unstructured") == 1
    assert await store.get_job(old.id, tenant=None) is None
    assert await store.get_job(node.id, tenant=None) is not None
    assert await store.get_job(running.id, tenant=None) is not None
    assert await store.update_batch(workflow.evolve(state=JobState.FAILED), expect=workflow.state)
    assert await store.purge_jobs(cutoff=T0 + 100, limit=10, workflow_origin="unstructured") == 1
    assert await store.get_job(young.id, tenant=None) is not None


async def test_finished_batches_and_their_rows_in_chunks(store: JobStore) -> None:
    done, _ = await store.insert_batch(make_batch())
    still, _ = await store.insert_batch(make_batch())
    rows = [
        make_job().evolve(batch_id=done.id, custom_id=f"r{i}", batch_line=i) for i in range(1, 6)
    ]
    await store.insert_rows(rows)
    ended = done.evolve(state=JobState.SUCCEEDED, finished_at=T0 + 10)
    assert await store.update_batch(ended, expect=done.state)
    assert await store.finished_batches(cutoff=T0 + 5, limit=10) == []
    [found] = await store.finished_batches(cutoff=T0 + 20, limit=10)
    assert found.id == done.id and still.id != found.id
    assert await store.purge_batch_rows(tenant="t1", batch_id=done.id, limit=3) == 3
    assert await store.purge_batch_rows(tenant="t1", batch_id=done.id, limit=3) == 2
    assert await store.purge_batch_rows(tenant="t1", batch_id=done.id, limit=3) == 0


async def test_known_records_names_files_and_batches_of_any_tenant(store: JobStore) -> None:
    await store.insert_file(a_file("file-a", expires_at=None, tenant="t2"))
    batch, _ = await store.insert_batch(make_batch())
    found = await store.known_records(["file-a", batch.id, "file-gone"])
    assert found == {"file-a", batch.id}
    assert await store.known_records([]) == set()
