"""The node store (core.nodes.NodeStore) and NodeService on every store: memory, SQLite,
PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferq.core.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound
from inferq.core.models import Job, Lease
from inferq.core.node_messages import LeaseCompletes
from inferq.core.nodes import NodeService, Seen, hash_token
from inferq.core.ports import ClaimOrder
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import PayloadRequest, PayloadResult
from inferq.store.base import JobStore
from inferq.store.memory import MemoryStore
from inferq.store.sqlite import SQLiteStore
from tests.support.postgres import postgres_store


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


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_token_is_stored_hashed_and_opens_only_its_node(store: JobStore) -> None:
    clock = Clock()
    nodes = NodeService(store, cache_seconds=0, clock=clock)
    node, token = await nodes.create(name="gpu1")
    assert token.startswith("iqn-") and node.prefix == token[:10]
    assert (await store.find_node(hash_token(token))) is not None
    assert all(token not in repr(n) for n in await store.list_nodes())
    assert (await nodes.authenticate(token)).id == node.id
    with pytest.raises(AuthenticationFailed, match="not valid"):
        await nodes.authenticate(token + "x")
    with pytest.raises(AuthenticationFailed, match="no node token"):
        await nodes.authenticate(None)
    with pytest.raises(Conflict):
        await nodes.create(name="gpu1")
    with pytest.raises(InvalidRequest):
        await nodes.create(name="bad name!")
    await nodes.revoke("gpu1")
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await nodes.authenticate(token)
    with pytest.raises(NotFound):
        await nodes.revoke("nobody")


async def test_what_nodes_report_is_listed(store: JobStore) -> None:
    clock = Clock()
    nodes = NodeService(store, clock=clock)
    first, _ = await nodes.create(name="a")
    clock.now += 1
    second, _ = await nodes.create(name="b")
    await nodes.hello(first, version="1.2", models={"m1": 2, "m2": 1})
    clock.now += 5
    await nodes.seen(first, in_flight=3)
    await nodes.seen(first, in_flight=1)  # within a second: not written
    await store.touch_node(second.id, Seen(clock.now, 0))
    await store.count_agreement([first.id, second.id], disagreed=[second.id])
    await store.count_agreement([first.id, second.id], disagreed=[])
    listed = {n.name: n for n in await nodes.list()}
    assert [n.name for n in await nodes.list()] == ["a", "b"]
    a, b = listed["a"], listed["b"]
    assert a.models == {"m1": 2, "m2": 1} and a.version == "1.2"
    assert a.in_flight == 3 and a.last_seen == clock.now
    assert b.models == {} and b.version == "" and b.last_seen == clock.now
    assert (a.compared, a.disagreed) == (2, 0)
    assert (b.compared, b.disagreed) == (2, 1)


async def test_whether_a_node_serves_a_model_is_read_from_the_store(store: JobStore) -> None:
    """NodeService.serving, as another API process sees it: only through the store (what
    the nodes announced, when they were last seen, whether they were revoked)."""
    clock = Clock()
    here = NodeService(store, clock=clock)  # the process the node talks to
    elsewhere = NodeService(store, clock=clock)
    node, _ = await here.create(name="gpu")
    await here.hello(node, version="1", models={"m1": 1})
    assert await elsewhere.serving("m1", within=60)
    assert not await elsewhere.serving("m2", within=60)
    clock.now += 60.5
    assert not await elsewhere.serving("m1", within=60)
    await here.seen(node, in_flight=0)  # a claim: its models stay as announced
    assert await here.serving("m1", within=60)
    assert not await elsewhere.serving("m1", within=60)  # its read is a moment old
    clock.now += elsewhere.roster_seconds
    assert await elsewhere.serving("m1", within=60)
    await store.revoke_node("gpu", now=clock.now)
    clock.now += elsewhere.roster_seconds
    assert not await elsewhere.serving("m1", within=60)


async def test_a_batch_of_results_is_fenced_lease_by_lease(store: JobStore) -> None:
    """complete_leases (a node's report, one write): each lease's fence holds or fails on
    its own, as complete's does."""
    assert isinstance(store, LeaseCompletes)
    now = time.time()
    for _ in range(4):
        await store.insert_job(
            Job(
                id=str(uuid.uuid4()),
                tenant="t",
                model="m",
                origin="together",
                service_class=ServiceClass.ASYNC,
                priority=0,
                state=JobState.QUEUED,
                request=PayloadRequest({}),
                created_at=now,
            )
        )
    jobs = await store.claim(ClaimOrder(owner="node:a:s", limit=4, lease_seconds=30), now=now)
    assert len(jobs) == 4
    done = PayloadResult(outputs={"ok": True})
    leases = [Lease(j.id, "node:a:s", j.attempt) for j in jobs]
    # the second with an attempt that is not the job's, the fourth under another owner
    sent = [
        leases[0],
        Lease(jobs[1].id, "node:a:s", jobs[1].attempt + 1),
        leases[2],
        Lease(jobs[3].id, "node:b:s", jobs[3].attempt),
    ]
    assert await store.complete_leases([], now=now) == []
    held = await store.complete_leases([(lease, done) for lease in sent], now=now + 1)
    assert held == [True, False, True, False]
    stored = [await store.get_job(j.id, tenant=None) for j in jobs]
    assert [s.state if s else None for s in stored] == [
        JobState.SUCCEEDED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
        JobState.RUNNING,
    ]
    assert stored[0] is not None and stored[0].result == done
    # the same leases again: the jobs no longer run under them
    assert await store.complete_leases([(leases[0], done)], now=now + 2) == [False]
