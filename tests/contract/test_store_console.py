"""What the web console reads from every store (memory, SQLite, PostgreSQL): one
tenant's active jobs, and the jobs that ended per interval (the throughput plot)."""

from __future__ import annotations

from inferq.core.models import JobError
from inferq.core.ports import Ending
from inferq.core.states import JobState, ServiceClass
from inferq.store.base import JobStore
from tests.contract import test_store_contract as contract
from tests.contract.test_store_contract import RESULT, T0, claim, lease_of, make_job

#: the contract suite's fixture: every test runs on memory, SQLite and PostgreSQL
store = contract.store


async def test_count_active_of_one_tenant(store: JobStore) -> None:
    await store.insert_job(make_job(tenant="t1"))
    await store.insert_job(make_job(tenant="t1", service_class=ServiceClass.INTERACTIVE))
    await store.insert_job(make_job(tenant="t2"))
    await store.insert_job(make_job(tenant="t2"))
    (running,) = await claim(store, limit=1)
    assert running.tenant == "t1" and running.service_class is ServiceClass.INTERACTIVE

    def grouped(counts: list[object]) -> dict[tuple[object, ...], int]:
        return {(c.service_class, c.state): c.count for c in counts}  # type: ignore[attr-defined]

    assert grouped(await store.count_active(tenant="t1")) == {
        (ServiceClass.ASYNC, JobState.QUEUED): 1,
        (ServiceClass.INTERACTIVE, JobState.RUNNING): 1,
    }
    assert grouped(await store.count_active(tenant="t2")) == {
        (ServiceClass.ASYNC, JobState.QUEUED): 2
    }
    assert await store.count_active(tenant="nobody") == []
    assert sum(c.count for c in await store.count_active()) == 4


async def test_finished_counts_per_interval_and_tenant(store: JobStore) -> None:
    for tenant in ("t1", "t1", "t1", "t2"):
        await store.insert_job(make_job(tenant=tenant))
    first, second, third, other = await claim(store)
    # RESULT: 5 prompt and 2 completion tokens
    assert await store.complete(lease_of(first), RESULT, now=T0 + 10)
    assert await store.complete(lease_of(second), RESULT, now=T0 + 70)
    error = JobError("engine_error", "broke")
    assert await store.fail(lease_of(third), error, now=T0 + 75, retry=False)
    assert await store.complete(lease_of(other), RESULT, now=T0 + 80)
    queued = await store.insert_job(make_job(tenant="t1"))
    await store.finish(queued.id, Ending(JobState.CANCELLED), tenant=None, now=T0 + 500)

    counts = await store.finished_counts(tenant="t1", since=T0, until=T0 + 180, bucket=60)
    got = [(c.bucket, c.jobs, c.succeeded, c.prompt_tokens, c.completion_tokens) for c in counts]
    assert got == [(0, 1, 1, 5, 2), (1, 2, 1, 5, 2)]
    every = await store.finished_counts(tenant=None, since=T0, until=T0 + 180, bucket=60)
    assert [(c.bucket, c.jobs, c.succeeded) for c in every] == [(0, 1, 1), (1, 3, 2)]
    # the window's edges: since is in, until is out
    edge = await store.finished_counts(tenant=None, since=T0 + 10, until=T0 + 70, bucket=30)
    assert [(c.bucket, c.jobs) for c in edge] == [(0, 1)]
    assert await store.finished_counts(tenant="t2", since=T0 + 100, until=T0 + 400, bucket=60) == []
