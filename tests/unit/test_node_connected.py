"""A request its client waits for, to a model only nodes run, needs a connected node that
serves it (NodeWork.check_connected, called by JobService.submit for sync jobs); without
one it is refused at once and nothing is stored. On the memory store, with a fake clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from inferq.blobs.memory import MemoryBlobs
from inferq.core.errors import EngineUnavailable, InvalidRequest, NotFound
from inferq.core.events import JobEvents
from inferq.core.lookups import TimedValue
from inferq.core.models import Job, JobFilter
from inferq.core.node_messages import NodeLimits
from inferq.core.node_replicas import Replication
from inferq.core.node_work import NodeWork
from inferq.core.nodes import Node, NodeService, NoNodeConnected, Seen
from inferq.core.service import JobService
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatMessage, ChatRequest, EmbedRequest
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.engines.remote import kinds_of
from inferq.store.memory import MemoryStore

CHAT, OTHER, LOCAL = "remote-chat", "remote-other", "local-chat"
#: a model whose jobs run on two nodes, the answers compared
CHECKED = "remote-checked"
#: a lease far shorter than a claim's wait: it plays no part in the window
LIMITS = NodeLimits(lease_seconds=3, max_wait=30)
WINDOW = 60.0
SESSION = "session-1"


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    """The memory store, counting its reads of every node."""

    def __init__(self) -> None:
        super().__init__()
        self.node_reads = 0

    async def list_nodes(self) -> list[Node]:
        self.node_reads += 1
        return await super().list_nodes()


class World:
    def __init__(self) -> None:
        self.clock = Clock()
        self.store = CountingStore()
        self.registry = ModelRegistry(
            {
                CHAT: ModelSpec(name=CHAT, engine="remote", context_length=512),
                OTHER: ModelSpec(name=OTHER, engine="remote", context_length=512),
                CHECKED: ModelSpec(name=CHECKED, engine="remote", context_length=512),
                LOCAL: ModelSpec(name=LOCAL, engine="fake", context_length=512),
            }
        )
        self.nodes = NodeService(self.store, clock=self.clock)
        self.work = NodeWork(
            store=self.store,
            blobs=MemoryBlobs(),
            events=JobEvents(),
            nodes=self.nodes,
            kind_of=kinds_of(self.registry),
            limits=LIMITS,
            replication=lambda model: (
                Replication(replicas=2, agree_model=LOCAL) if model == CHECKED else None
            ),
            clock=self.clock,
        )
        self.jobs = JobService(
            store=self.store,
            models=self.registry,
            events=JobEvents(),
            clock=self.clock,
            nodes=self.work,
        )

    async def node(self, name: str = "gpu", models: dict[str, int] | None = None) -> Node:
        """A node that said hello to this process now."""
        node, _ = await self.nodes.create(name=name)
        return await self.nodes.hello(node, version="1", models=models or {CHAT: 1})

    async def connected(self, model: str = CHAT) -> bool:
        try:
            await self.work.check_connected(model)
        except NoNodeConnected:
            return False
        return True


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    await w.store.open()
    yield w
    await w.work.close()


def chat() -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", "hi"),))


def test_the_window_is_twice_a_claims_longest_wait() -> None:
    assert LIMITS.seen_within == WINDOW
    assert NodeLimits().seen_within == 60.0  # the defaults: a 30 s claim
    assert NodeLimits(max_wait=0.1, heartbeat_seconds=0.5).seen_within == 1.0


async def test_a_node_counts_until_the_window_has_passed_since_it_was_seen(
    world: World,
) -> None:
    assert not await world.connected()
    await world.node()
    assert await world.connected()
    world.clock.now += WINDOW  # its last claim exactly a window ago: still connected
    assert await world.connected()
    world.clock.now += 0.001
    assert not await world.connected()
    with pytest.raises(NoNodeConnected) as refused:
        await world.work.check_connected(CHAT)
    error = refused.value
    assert isinstance(error, EngineUnavailable)  # 503 (Anthropic: 529), retried by SDKs
    assert CHAT in error.message and "no node serving it is connected" in error.message
    assert error.param == "model" and error.retry_after > 0


async def test_claims_and_heartbeats_keep_a_node_connected(world: World) -> None:
    node = await world.node()
    for _ in range(3):
        # an idle node's long poll, as long as the server lets a claim wait: its next
        # claim notes it again
        world.clock.now += LIMITS.max_wait
        await world.work.claim(node, session=SESSION, free={CHAT: 1}, wait=0, running=0)
        world.clock.now += world.nodes.roster_seconds
        assert await world.connected()
    # a busy node claims nothing, but sends heartbeats
    for _ in range(3):
        world.clock.now += LIMITS.max_wait
        await world.work.heartbeat(node, session=SESSION, beats=[])
        world.clock.now += world.nodes.roster_seconds
        assert await world.connected()
    world.clock.now += WINDOW
    assert not await world.connected()


async def test_a_revoked_node_does_not_count(world: World) -> None:
    await world.node()
    assert await world.connected()
    await world.store.revoke_node("gpu", now=world.clock())  # revoked by `inferq nodes revoke`
    world.clock.now += world.nodes.roster_seconds
    assert not await world.connected()


async def test_a_node_revoked_here_stops_counting_at_once(world: World) -> None:
    await world.node()
    assert await world.connected()
    await world.nodes.revoke("gpu")
    assert not await world.connected()


async def test_a_model_whose_jobs_run_on_two_nodes_needs_two_connected(world: World) -> None:
    await world.node("gpu-1", models={CHECKED: 1})
    assert not await world.connected(CHECKED)
    with pytest.raises(NoNodeConnected) as refused:
        await world.work.check_connected(CHECKED)
    assert "run on 2 nodes" in refused.value.message
    await world.node("gpu-2", models={CHECKED: 1})
    assert await world.connected(CHECKED)


async def test_a_node_that_does_not_announce_the_model_does_not_count(world: World) -> None:
    await world.node(models={OTHER: 2})
    assert await world.connected(OTHER)
    assert not await world.connected(CHAT)


async def test_a_node_that_announces_no_model_any_more_does_not_count(world: World) -> None:
    node = await world.node()
    await world.nodes.hello(node, version="1", models={})  # Infera's deregister_node
    assert not await world.connected()


async def test_a_node_process_that_says_bye_stops_counting_at_once(world: World) -> None:
    node, _ = await world.nodes.create(name="gpu")
    await world.work.hello(node, session=SESSION, version="1", models={CHAT: 1})
    await world.jobs.submit(tenant="t", model=CHAT, request=chat(), origin="openai")
    [held] = await world.work.claim(node, session=SESSION, free={CHAT: 1}, wait=0, running=0)
    assert await world.connected()  # read now: the bye must not wait for the next read
    assert await world.work.bye(node, session=SESSION) == [held.id]
    assert not await world.connected()
    # the job it still held is queued again, its attempt not used up
    again = await world.work.claim(node, session="session-2", free={CHAT: 1}, wait=0, running=0)
    assert [(j.id, j.attempt) for j in again] == [(held.id, 1)]


async def test_another_process_of_the_node_counts_it_again_when_heard_from(
    world: World,
) -> None:
    node, _ = await world.nodes.create(name="gpu")
    await world.work.hello(node, session=SESSION, version="1", models={CHAT: 1})
    await world.work.hello(node, session="session-2", version="1", models={CHAT: 1})
    await world.work.bye(node, session=SESSION)  # the older of two processes stops
    assert not await world.connected()
    # the other one's next long poll (at least every max_wait) counts the node again
    await world.work.claim(node, session="session-2", free={CHAT: 1}, wait=0, running=0)
    world.clock.now += world.nodes.roster_seconds
    assert await world.connected()


async def test_a_model_that_runs_in_process_is_never_refused_and_reads_no_node(
    world: World,
) -> None:
    assert await world.connected(LOCAL)
    assert world.store.node_reads == 0


async def test_the_nodes_are_read_at_most_once_a_second(world: World) -> None:
    for _ in range(5):
        assert not await world.connected()
    assert world.store.node_reads == 1
    # a node says hello to another API process: the store has it, this process not yet
    node, _ = await world.nodes.create(name="elsewhere")
    await world.store.touch_node(node.id, Seen(world.clock(), 0, "1", {CHAT: 1}))
    world.clock.now += world.nodes.roster_seconds - 0.01
    assert not await world.connected()
    assert world.store.node_reads == 1
    world.clock.now += 0.01
    assert await world.connected()
    assert world.store.node_reads == 2


async def test_a_hello_to_this_process_is_seen_at_once(world: World) -> None:
    assert not await world.connected()
    await world.node()
    assert await world.connected()  # no wait for the read to expire


async def test_checks_at_once_share_one_read(world: World) -> None:
    await world.node()
    await world.connected()
    reads = world.store.node_reads
    world.clock.now += world.nodes.roster_seconds
    answers = await asyncio.gather(*(world.connected() for _ in range(50)))
    assert all(answers)
    assert world.store.node_reads == reads + 1


async def test_a_failed_read_is_not_remembered() -> None:
    clock = Clock()
    reads: list[str] = []

    async def load() -> str:
        reads.append("read")
        if len(reads) == 1:
            raise OSError("the store is down")
        return "nodes"

    value = TimedValue(1.0, load, clock=clock)
    with pytest.raises(OSError):
        await value.get()
    assert await value.get() == "nodes"
    assert await value.get() == "nodes"
    assert len(reads) == 2


async def test_a_sync_submit_is_refused_and_stores_nothing_while_queued_work_waits(
    world: World,
) -> None:
    async def submit(
        model: str = CHAT, service_class: ServiceClass = ServiceClass.INTERACTIVE
    ) -> Job:
        return await world.jobs.submit(
            tenant="t",
            model=model,
            request=chat(),
            origin="openai",
            service_class=service_class,
            timeout=240 if service_class is ServiceClass.INTERACTIVE else None,
        )

    with pytest.raises(NoNodeConnected):
        await submit()
    assert await world.store.list_jobs(JobFilter()) == []
    # the request is checked first: an unknown model is still 404, a wrong request 400
    with pytest.raises(NotFound):
        await submit("nope")
    with pytest.raises(InvalidRequest):
        await world.jobs.submit(
            tenant="t",
            model=CHAT,
            request=EmbedRequest(("red",)),
            origin="openai",
            service_class=ServiceClass.INTERACTIVE,
        )
    # work collected later queues for a node; a model that runs here needs none
    for queued in (ServiceClass.ASYNC, ServiceClass.BATCH):
        assert (await submit(service_class=queued)).state is JobState.QUEUED
    assert (await submit(LOCAL)).state is JobState.QUEUED
    await world.node()
    assert (await submit()).state is JobState.QUEUED
    assert len(await world.store.list_jobs(JobFilter())) == 4


async def test_the_connected_nodes_gauge_counts_the_nodes_a_sync_request_counts() -> None:
    """``inferq_nodes_connected`` uses the same window as the rule above."""
    import time

    from prometheus_client.parser import text_string_to_metric_families

    from inferq.runner.metrics import Metrics

    store = MemoryStore()
    await store.open()
    try:
        nodes = NodeService(store)
        now = time.time()
        for name, ago in (("inside", WINDOW - 5), ("outside", WINDOW + 5)):
            node, _ = await nodes.create(name=name)
            await store.touch_node(node.id, Seen(now - ago, 0, "1", {CHAT: 1}))
        text = await Metrics().scrape(store, nodes=store, node_window=LIMITS.seen_within)
    finally:
        await store.close()
    gauge = {
        s.name: s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    assert LIMITS.seen_within == WINDOW
    assert gauge["inferq_nodes_connected"] == 1
