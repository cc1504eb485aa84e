"""Redundant execution's mechanics (inferq.core.node_replicas) on the memory store: the
children of a job go to distinct nodes (also after a restart), the job's lease does not
lapse while they wait, a vanished node's child goes to a node that ran none, and a
decision lost to a crash is taken by the sweep."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from inferq.blobs.memory import MemoryBlobs
from inferq.core.errors import ConfigError
from inferq.core.events import JobEvents
from inferq.core.models import Job, Lease
from inferq.core.node_messages import Held, NodeLimits
from inferq.core.node_replicas import Replication, child_ids
from inferq.core.node_work import NodeWork
from inferq.core.nodes import Node, NodeService
from inferq.core.ports import ClaimOrder, Ending
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatMessage, ChatRequest, ChatResult, Usage
from inferq.engines.registry import ModelRegistry, load_specs
from inferq.engines.remote import replications_of
from inferq.store.base import JobStore
from inferq.store.memory import MemoryStore

MODEL = "voted"
PLAN = Replication(replicas=3, agree_model="agree", threshold=0.9)
SESSION = "session-1"
LEASE = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def embed(model: str, texts: list[str]) -> Sequence[Sequence[float]]:
    assert model == "agree"
    return [[1.0, 0.0] if text.startswith("four") else [0.0, 1.0] for text in texts]


class World:
    def __init__(self, store: JobStore | None = None) -> None:
        self.store = store or MemoryStore()
        self.events = JobEvents()
        self.clock = Clock()
        self.work = self.server()

    def server(self) -> NodeWork:
        """A server process (a new one: a restart)."""
        return NodeWork(
            store=self.store,
            blobs=MemoryBlobs(),
            events=self.events,
            nodes=NodeService(self.store),
            kind_of={MODEL: "chat"}.get,
            limits=NodeLimits(lease_seconds=LEASE),
            replication=lambda name: PLAN if name == MODEL else None,
            embed=embed,
            clock=self.clock,
        )

    async def node(self, name: str) -> Node:
        node, _ = await self.work.nodes.create(name=name)
        return await self.work.hello(node, session=SESSION, version="1", models={MODEL: 4})

    async def submit(self) -> Job:
        job = Job(
            id=str(uuid.uuid4()),
            tenant="t",
            model=MODEL,
            origin="together",
            service_class=ServiceClass.ASYNC,
            priority=0,
            state=JobState.QUEUED,
            request=ChatRequest(messages=(ChatMessage("user", "two plus two"),)),
            created_at=self.clock.now,
        )
        return await self.store.insert_job(job)

    async def claim(self, node: Node, free: int = 4) -> list[Job]:
        return await self.work.claim(node, session=SESSION, free={MODEL: free}, wait=0, running=0)

    async def answer(self, node: Node, job: Job, text: str) -> None:
        result = ChatResult(text=text, finish_reason="stop", usage=Usage(1, 1)).to_dict()
        await self.work.complete(node, Held(SESSION, job.id, job.attempt), result=result)

    async def get(self, job_id: str) -> Job:
        job = await self.store.get_job(job_id, tenant=None)
        assert job is not None
        return job


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    await w.store.open()
    yield w
    await w.work.close()


async def test_each_node_gets_one_child_and_the_majority_answer_wins(world: World) -> None:
    a, b, c = [await world.node(n) for n in "abc"]
    job = await world.submit()
    [from_a] = await world.claim(a)  # four free slots, one child: never two of one job
    assert from_a.model == MODEL and from_a.id in child_ids(job.id, 3)
    assert await world.claim(a) == []
    [from_b], [from_c] = await world.claim(b), await world.claim(c)
    assert len({from_a.id, from_b.id, from_c.id}) == 3
    await world.answer(a, from_a, "four")
    await world.answer(b, from_b, "five, surely")
    assert (await world.get(job.id)).state is JobState.RUNNING  # waits for the last
    await world.answer(c, from_c, "four.")
    done = await world.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.attempt == 1
    assert isinstance(done.result, ChatResult) and done.result.text.startswith("four")
    agreement = done.info["agreement"]
    assert agreement["disagreed"] == ["b"] and sorted(agreement["agreed"]) == ["a", "c"]
    assert agreement["majority"] and agreement["winner"] in ("a", "c")
    assert sorted(tuple(p[:2]) for p in agreement["pairs"]) == [("a", "b"), ("a", "c"), ("b", "c")]
    counts = {n.name: (n.compared, n.disagreed) for n in await world.work.nodes.list()}
    assert counts == {"a": (1, 0), "b": (1, 1), "c": (1, 0)}


async def test_a_restarted_server_still_hands_a_node_no_second_child(world: World) -> None:
    a, b = await world.node("a"), await world.node("b")
    await world.submit()
    [from_a] = await world.claim(a)
    world.work = world.server()  # what a process remembered is gone
    assert await world.claim(a) == []
    [from_b] = await world.claim(b)
    assert from_b.id != from_a.id


async def test_the_job_waits_for_its_children_without_using_up_attempts(world: World) -> None:
    a, b, c = [await world.node(n) for n in "abc"]
    job = await world.submit()
    children = [(await world.claim(n))[0] for n in (a, b)]
    for node, child in zip((a, b), children, strict=True):
        await world.answer(node, child, "four")
    for _ in range(6):  # the third child waits long: no node for it
        world.clock.now += LEASE + 1
        assert await world.claim(a) == [] and await world.claim(b) == []
    waiting = await world.get(job.id)
    assert waiting.state is JobState.RUNNING and waiting.attempt == 1 and waiting.error is None
    [last] = await world.claim(c)
    await world.answer(c, last, "four")
    done = await world.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.attempt == 1
    assert done.info["agreement"]["disagreed"] == []


async def test_a_vanished_nodes_child_goes_to_a_node_that_ran_none(world: World) -> None:
    a, b, c, d = [await world.node(n) for n in "abcd"]
    job = await world.submit()
    got = {n.name: (await world.claim(n))[0] for n in (a, b, c)}
    await world.answer(a, got["a"], "four")
    await world.answer(b, got["b"], "four")
    world.clock.now += LEASE + 1  # c vanished: its lease ran out
    assert await world.claim(a) == [] and await world.claim(b) == []
    [again] = await world.claim(d)
    assert again.id == got["c"].id and again.attempt == 2
    await world.answer(d, again, "four")
    done = await world.get(job.id)
    assert done.state is JobState.SUCCEEDED
    assert sorted(done.info["agreement"]["agreed"]) == ["a", "b", "d"]


async def test_a_decision_lost_to_a_crash_is_taken_by_the_sweep(world: World) -> None:
    a, b, c = [await world.node(n) for n in "abc"]
    job = await world.submit()
    children = [(await world.claim(n))[0] for n in (a, b, c)]
    for child in children:  # the children ended, but no process decided the job
        assert child.owner is not None
        result = ChatResult(text="four", finish_reason="stop", usage=Usage(1, 1))
        lease = Lease(child.id, child.owner, child.attempt)
        assert await world.store.complete(lease, result, now=world.clock.now)
    world.work = world.server()
    assert (await world.get(job.id)).state is JobState.RUNNING
    world.clock.now += LEASE + 1
    assert await world.claim(a) == []  # a claim sweeps the model's running jobs
    done = await world.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.info["agreement"]["disagreed"] == []


SERVER = """
[models.agree]
engine = "fake"
embedding = true

[models.chatty]
engine = "fake"

[models.far-embed]
engine = "remote"
embedding = true
"""


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('engine = "remote"\nreplicas = 3', "agree_model"),
        ('engine = "remote"\nreplicas = 0\nagree_model = "agree"', "replicas is an integer"),
        ('engine = "remote"\nreplicas = true\nagree_model = "agree"', "replicas is an integer"),
        ('engine = "remote"\nreplicas = "3"\nagree_model = "agree"', "replicas is an integer"),
        ('engine = "remote"\nhandler = true\nreplicas = 3\nagree_model = "agree"', "chat models"),
        ('engine = "fake"\nreplicas = 3\nagree_model = "agree"', 'engine = "remote"'),
        ('engine = "remote"\nreplicas = 3\nagree_model = "nope"', "not an embedding model"),
        ('engine = "remote"\nreplicas = 3\nagree_model = "chatty"', "not an embedding model"),
        ('engine = "remote"\nreplicas = 3\nagree_model = "far-embed"', "not an embedding model"),
        (
            'engine = "remote"\nreplicas = 3\nagree_model = "agree"\nagree_threshold = 1.5',
            "agree_threshold",
        ),
    ],
)
def test_bad_replication_is_a_config_error_at_start(
    tmp_path: Path, table: str, message: str
) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f"{SERVER}\n[models.voted]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        replications_of(ModelRegistry(load_specs(path)))


def test_a_good_replication_is_read(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        f'{SERVER}\n[models.voted]\nengine = "remote"\nreplicas = 3\nagree_model = "agree"\n'
    )
    registry = ModelRegistry(load_specs(path))
    plan = replications_of(registry)
    assert plan("voted") == Replication(replicas=3, agree_model="agree", threshold=0.9)
    assert plan("agree") is None and plan("far-embed") is None


async def test_the_children_of_a_cancelled_job_are_not_run(world: World) -> None:
    a, b = await world.node("a"), await world.node("b")
    job = await world.submit()
    [from_a] = await world.claim(a)
    await world.store.finish(job.id, Ending(JobState.CANCELLED), tenant=None, now=world.clock.now)
    assert await world.claim(b) == []  # the waiting children end instead
    states = {c: (await world.get(c)).state for c in child_ids(job.id, 3) if c != from_a.id}
    assert set(states.values()) == {JobState.CANCELLED}
    assert (await world.get(job.id)).state is JobState.CANCELLED


async def test_the_sweep_inserts_the_children_a_crash_left_out(world: World) -> None:
    a = await world.node("a")
    job = await world.submit()
    # a server took the job and stopped before inserting its children
    order = ClaimOrder(owner="replicas:gone", limit=1, lease_seconds=1e6, models=[MODEL])
    [taken] = await world.store.claim(order, now=world.clock.now)
    assert taken.id == job.id
    [child] = await world.claim(a)
    assert child.id in child_ids(job.id, 3)
