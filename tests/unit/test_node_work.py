"""NodeWork, the server's side of the node protocol, on the memory store and blobs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inferq.blobs.memory import MemoryBlobs
from inferq.core import node_work
from inferq.core.errors import InvalidRequest, NotFound, PayloadTooLarge
from inferq.core.events import JobEvents
from inferq.core.models import Job, JobError
from inferq.core.node_messages import Beat, Held, LeaseLost, NodeLimits, Outcome
from inferq.core.node_work import NodeWork
from inferq.core.nodes import Node, NodeService
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatMessage, ChatRequest, PayloadRequest, Request
from inferq.store.memory import MemoryStore

CHAT, HANDLER = "chat-model", "handler-model"
KINDS = {CHAT: "chat", HANDLER: "payload"}
SESSION = "session-1"


class World:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.events = JobEvents()
        self.work = NodeWork(
            store=self.store,
            blobs=MemoryBlobs(),
            events=self.events,
            nodes=NodeService(self.store),
            kind_of=KINDS.get,
            limits=NodeLimits(lease_seconds=30, max_output_bytes=1000, max_file_bytes=10),
        )

    async def node(self, name: str = "gpu") -> Node:
        node, _ = await self.work.nodes.create(name=name)
        return await self.work.hello(
            node, session=SESSION, version="1", models={CHAT: 2, HANDLER: 2}
        )

    async def submit(self, model: str, request: Request, tenant: str = "t") -> Job:
        job = Job(
            id=str(uuid.uuid4()),
            tenant=tenant,
            model=model,
            origin="together",
            service_class=ServiceClass.ASYNC,
            priority=0,
            state=JobState.QUEUED,
            request=request,
            created_at=time.time(),
        )
        stored = await self.store.insert_job(job)
        self.events.job_submitted()
        return stored


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    await w.store.open()
    yield w
    await w.work.close()


def chat(text: str = "hi") -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),))


async def test_a_waiting_claim_wakes_when_work_is_submitted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no poll for 60 s and a claim that waits 20 s: only the submission's wake-up can end
    # it within the 10 s below (a loaded machine may take more than a moment to get there)
    monkeypatch.setattr(node_work, "POLL_INTERVAL", 60.0)
    node = await world.node()
    claim = asyncio.create_task(
        world.work.claim(node, session=SESSION, free={HANDLER: 1}, wait=20, running=0)
    )
    await asyncio.sleep(0.05)
    assert not claim.done()
    job = await world.submit(HANDLER, PayloadRequest({"x": 1}))
    claimed = await asyncio.wait_for(claim, 10)  # the submission woke it, not a poll
    assert [j.id for j in claimed] == [job.id]
    assert claimed[0].owner == f"node:{node.id}:{SESSION}" and claimed[0].attempt == 1


async def test_writes_are_fenced_by_node_session_and_attempt(world: World) -> None:
    node, other = await world.node("a"), await world.node("b")
    job = await world.submit(HANDLER, PayloadRequest({}))
    [claimed] = await world.work.claim(node, session=SESSION, free={HANDLER: 1}, wait=0, running=0)
    ok = {"outputs": {"done": True}}
    with pytest.raises(LeaseLost):
        await world.work.complete(other, Held(SESSION, job.id, 1), result=ok)
    with pytest.raises(LeaseLost):
        await world.work.complete(node, Held("session-2", job.id, 1), result=ok)
    with pytest.raises(LeaseLost):
        await world.work.complete(node, Held(SESSION, job.id, 2), result=ok)
    with pytest.raises(NotFound):
        await world.work.complete(node, Held(SESSION, "nope", 1), result=ok)
    with pytest.raises(InvalidRequest):
        await world.work.complete(node, Held(SESSION, job.id, 1), result={"text": "chat"})
    with pytest.raises(PayloadTooLarge):
        await world.work.complete(
            node, Held(SESSION, job.id, 1), result={"outputs": {"x": "y" * 2000}}
        )
    running = await world.store.get_job(job.id, tenant=None)
    assert running is not None and running.state is JobState.RUNNING
    await world.work.complete(node, Held(SESSION, job.id, claimed.attempt), result=ok)
    done = await world.store.get_job(job.id, tenant=None)
    assert done is not None and done.state is JobState.SUCCEEDED


async def test_heartbeats_relay_text_and_info_only_under_the_lease(world: World) -> None:
    node = await world.node()
    job = await world.submit(CHAT, chat())
    await world.work.claim(node, session=SESSION, free={CHAT: 1}, wait=0, running=0)
    sub = world.events.subscribe(job.id)
    held, lost = await world.work.heartbeat(
        node,
        session=SESSION,
        beats=[
            Beat(job.id, 1, info={"stage": "a"}, progress=0.5, text=("he", "llo")),
            Beat("x", 1),
        ],
    )
    assert (held, lost) == ([job.id], ["x"])
    assert [await sub.next(1), await sub.next(1)] == ["he", "llo"]
    stored = await world.store.get_job(job.id, tenant=None)
    assert stored is not None and stored.info == {"stage": "a", "progress": 0.5}
    await world.work.heartbeat(node, session="intruder", beats=[Beat(job.id, 1, text=("no",))])
    assert isinstance(await sub.next(0.05), TimeoutError)


async def test_report_answers_each_outcome_and_release_keeps_the_attempt(world: World) -> None:
    node = await world.node()
    done, failed, kept = [await world.submit(HANDLER, PayloadRequest({})) for _ in range(3)]
    await world.work.claim(node, session=SESSION, free={HANDLER: 3}, wait=0, running=0)
    fates = await world.work.report(
        node,
        [
            Outcome(Held(SESSION, done.id, 1), result={"outputs": {}}),
            Outcome(Held(SESSION, failed.id, 1), error=JobError("bad", "no"), retry=False),
            Outcome(Held(SESSION, "gone", 1), result={"outputs": {}}),
        ],
    )
    assert [f["ok"] for f in fates] == [True, True, False]
    assert fates[2]["code"] == "not_found"
    assert await world.work.release(node, session=SESSION, leases=[(kept.id, 1)]) == [kept.id]
    for job_id, state in ((done.id, JobState.SUCCEEDED), (failed.id, JobState.FAILED)):
        stored = await world.store.get_job(job_id, tenant=None)
        assert stored is not None and stored.state is state
    again = await world.work.claim(node, session=SESSION, free={HANDLER: 1}, wait=0, running=0)
    assert [j.id for j in again] == [kept.id] and again[0].attempt == 1


async def test_a_report_takes_one_result_per_job_and_fences_each(world: World) -> None:
    """A report's plain results go to the store in one write: a job named twice gets one
    result (the second is refused as a lost lease), a stale attempt and an oversized or
    malformed result are refused, and each answer stays in its place."""
    node = await world.node()
    jobs = [await world.submit(HANDLER, PayloadRequest({})) for _ in range(4)]
    await world.work.claim(node, session=SESSION, free={HANDLER: 4}, wait=0, running=0)
    a, b, c, d = (j.id for j in jobs)
    fates = await world.work.report(
        node,
        [
            Outcome(Held(SESSION, a, 1), result={"outputs": {"n": 1}}),
            Outcome(Held(SESSION, a, 1), result={"outputs": {"n": 2}}),
            Outcome(Held(SESSION, b, 2), result={"outputs": {}}),
            Outcome(Held(SESSION, c, 1), result={"outputs": {"big": "x" * 2000}}),
            Outcome(Held(SESSION, d, 1), result={"no": "outputs"}),
        ],
    )
    assert [(f["id"], f["ok"], f.get("code")) for f in fates] == [
        (a, True, None),
        (a, False, "lease_lost"),
        (b, False, "lease_lost"),
        (c, False, "payload_too_large"),
        (d, False, "invalid_request"),
    ]
    stored = await world.store.get_job(a, tenant=None)
    assert stored is not None and stored.state is JobState.SUCCEEDED
    assert stored.result is not None and stored.result.to_dict()["outputs"] == {"n": 1}
    for job_id in (b, c, d):
        stored = await world.store.get_job(job_id, tenant=None)
        assert stored is not None and stored.state is JobState.RUNNING


async def test_an_exchange_sends_its_claim_with_its_results(world: World) -> None:
    """A node's results and its claim for the slots they freed reach the store together
    (one commit on SQLite): a result's write waits here until the claim has been asked
    for, which a claim made only after the results were stored would never do."""
    node = await world.node()
    first = [await world.submit(HANDLER, PayloadRequest({})) for _ in range(2)]
    await world.work.claim(node, session=SESSION, free={HANDLER: 2}, wait=0, running=0)
    waiting = [await world.submit(HANDLER, PayloadRequest({})) for _ in range(2)]
    claim_asked = asyncio.Event()
    claim, complete = world.store.claim, world.store.complete

    async def claim_then_signal(*args: Any, **kwargs: Any) -> list[Job]:
        claim_asked.set()
        return await claim(*args, **kwargs)

    async def complete_after_claim(*args: Any, **kwargs: Any) -> bool:
        await asyncio.wait_for(claim_asked.wait(), 5)
        return await complete(*args, **kwargs)

    world.store.claim = claim_then_signal  # type: ignore[method-assign]
    world.store.complete = complete_after_claim  # type: ignore[method-assign]
    outcomes = [Outcome(Held(SESSION, j.id, 1), result={"outputs": {}}) for j in first]
    fates, jobs = await world.work.exchange(
        node, outcomes, session=SESSION, free={HANDLER: 2}, running=0
    )
    assert [f["ok"] for f in fates] == [True, True]
    assert sorted(j.id for j in jobs) == sorted(j.id for j in waiting)
    for job in first:
        stored = await world.store.get_job(job.id, tenant=None)
        assert stored is not None and stored.state is JobState.SUCCEEDED
    with pytest.raises(InvalidRequest):  # a model nodes do not serve: nothing is stored
        await world.work.exchange(node, outcomes, session=SESSION, free={"other": 1}, running=0)


async def test_a_pull_node_takes_pings_and_finishes(world: World) -> None:
    node = await world.node()
    job = await world.submit(CHAT, chat())
    pulls = world.work.pulls
    assert await pulls.take(node, kind="payload") is None
    taken = await pulls.take(node, kind="chat")
    assert taken is not None and taken.id == job.id
    assert await pulls.ping(node) == [job.id]
    result = {
        "text": "yo",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    await pulls.finish(node, job.id, result=result, error=None)
    stored = await world.store.get_job(job.id, tenant=None)
    assert stored is not None and stored.state is JobState.SUCCEEDED
    assert await pulls.ping(node) == []
    with pytest.raises(LeaseLost):
        await pulls.finish(node, job.id, result=result, error=None)


async def test_a_node_that_cannot_reach_its_server_exits_3() -> None:
    from inferq.worker.client import NodeClient
    from inferq.worker.node import EXIT_UNREACHABLE, NodeProcess
    from inferq.worker.runners import HandlerRunner
    from tests.support.node_handlers import Workbench

    runner = HandlerRunner(Workbench(), capacity=1)
    process = NodeProcess(NodeClient("http://127.0.0.1:1", "iqn-x"), {HANDLER: runner})
    assert await process.run() == EXIT_UNREACHABLE


@pytest.mark.parametrize("answer", ["bye", "unreachable", "silent"])
async def test_a_stopping_node_says_bye_last_and_exits_0_whatever_the_answer(
    answer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bye is best effort: a server that cannot be reached, or does not answer within
    BYE_TIMEOUT, does not keep the process from exiting 0."""
    import httpx

    from inferq.worker import node
    from inferq.worker.runners import HandlerRunner
    from tests.support.node_handlers import Workbench

    monkeypatch.setattr(node, "BYE_TIMEOUT", 0.2)
    calls: list[str] = []

    class Server:
        session = "fake-session"

        async def hello(self, models: dict[str, int]) -> dict[str, Any]:
            return {"heartbeat_seconds": 0.5, "node": "n"}

        async def claim(self, free: dict[str, int], **kw: Any) -> list[dict[str, Any]]:
            await asyncio.sleep(kw["wait"])
            return []

        async def bye(self) -> None:
            calls.append("bye")
            if answer == "unreachable":
                raise httpx.ConnectError("cannot connect")
            if answer == "silent":
                await asyncio.sleep(60)

        async def close(self) -> None:
            calls.append("close")

    runner = HandlerRunner(Workbench(), capacity=1)
    process = node.NodeProcess(Server(), {HANDLER: runner})  # type: ignore[arg-type]
    running = asyncio.create_task(process.run())
    await asyncio.sleep(0.05)
    process.stop()
    assert await asyncio.wait_for(running, 5) == node.EXIT_OK
    assert calls == ["bye", "close"]


async def test_a_handler_runs_as_many_jobs_at_once_as_its_capacity() -> None:
    """Each of 40 jobs waits in predict until all 40 are in it: more than asyncio's shared
    thread pool holds on any machine up to 32 cores (cores + 4, at most 32)."""
    import threading

    from inferq.worker.handler import Context, Handler
    from inferq.worker.runners import HandlerRunner, Running

    capacity = 40
    together = threading.Barrier(capacity, timeout=10)

    class Crowd(Handler):
        def predict(self, payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
            return {"waited": together.wait()}

    runner = HandlerRunner(Crowd(), capacity=capacity)
    await runner.start()
    jobs = [
        Running(
            {"id": f"j{i}", "attempt": 1, "model": HANDLER, "kind": "payload",
             "request": {"kind": "payload", "payload": {}}, "info": {}}
        )
        for i in range(capacity)
    ]  # fmt: skip
    try:
        results = await asyncio.gather(*(runner.run(job) for job in jobs))
    finally:
        await runner.close()
    assert sorted(r["outputs"]["waited"] for r in results) == list(range(capacity))


async def test_quick_jobs_share_a_thread_and_a_blocking_one_holds_none_back() -> None:
    """Jobs that come together queue for the handler's threads: quick ones run on one
    after another (a thread each would cost a node more CPU than the job's whole share
    of the server), while a job that blocks gets the others more threads within a few
    milliseconds."""
    import threading

    from inferq.worker.handler import Context, Handler
    from inferq.worker.runners import HandlerRunner, Running

    capacity = 16
    release = threading.Event()
    threads: set[int] = set()

    class Mixed(Handler):
        def predict(self, payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
            threads.add(threading.get_ident())
            if payload.get("block"):
                release.wait(10)
            return {"at": time.monotonic()}

    def job(i: int, payload: dict[str, Any]) -> Running:
        return Running(
            {"id": f"j{i}", "attempt": 1, "model": HANDLER, "kind": "payload",
             "request": {"kind": "payload", "payload": payload}, "info": {}}
        )  # fmt: skip

    runner = HandlerRunner(Mixed(), capacity=capacity)
    await runner.start()
    try:
        quick = await asyncio.gather(*(runner.run(job(i, {})) for i in range(capacity)))
        assert len(quick) == capacity and len(threads) < capacity
        threads.clear()
        started = time.monotonic()
        blocked = asyncio.ensure_future(runner.run(job(100, {"block": True})))
        await asyncio.sleep(0.05)  # the blocking job holds its thread
        behind = [job(i, {}) for i in range(capacity - 1)]
        ended = await asyncio.wait_for(asyncio.gather(*(runner.run(j) for j in behind)), 5)
        assert not blocked.done()
        assert max(r["outputs"]["at"] for r in ended) - started < 2
        release.set()
        assert (await blocked)["outputs"]["at"] >= started
    finally:
        release.set()
        await runner.close()


async def test_a_report_does_not_wait_behind_the_claim_loops_long_poll() -> None:
    """Job A's report (with a claim for its freed slot) is on its way when the claim loop
    also wants to claim; job B ends meanwhile. B's report must go at once, not queue for
    the claim lock behind the claim loop, whose long poll waits CLAIM_WAIT (10 s) on a
    server with no work left."""
    import threading

    from inferq.worker.handler import Context, Handler
    from inferq.worker.node import NodeProcess
    from inferq.worker.runners import HandlerRunner

    release_b = threading.Event()

    class TwoJobs(Handler):
        def predict(self, payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
            if ctx.job_id == "b":
                release_b.wait(10)
            return {}

    def job(job_id: str) -> dict[str, Any]:
        return {"id": job_id, "attempt": 1, "model": HANDLER, "kind": "payload",
                "request": {"kind": "payload", "payload": {}}, "info": {},
                "service_class": "interactive"}  # fmt: skip

    class Server:
        session = "fake-session"

        def __init__(self) -> None:
            self.handed = False
            self.gate = asyncio.Event()
            self.reported: dict[str, float] = {}

        async def hello(self, models: dict[str, int]) -> dict[str, Any]:
            return {"heartbeat_seconds": 0.5, "node": "n"}

        async def claim(self, free: dict[str, int], **kw: Any) -> list[dict[str, Any]]:
            if not self.handed:
                self.handed = True
                return [job("a"), job("b")]
            await asyncio.sleep(kw["wait"])  # no work left: the long poll waits it out
            return []

        async def results(self, items: list[dict[str, Any]], **kw: Any) -> Any:
            if kw.get("free"):
                await self.gate.wait()
            for item in items:
                self.reported[item["id"]] = time.monotonic()
            return [{"id": i["id"], "ok": True} for i in items], []

        async def heartbeat(self, jobs: list[dict[str, Any]]) -> Any:
            return {j["id"] for j in jobs}, set()

        async def release(self, leases: list[tuple[str, int]]) -> list[str]:
            return []

        async def bye(self) -> None:
            return None

        async def close(self) -> None:
            return None

    server = Server()
    process = NodeProcess(server, {HANDLER: HandlerRunner(TwoJobs(), capacity=2)})  # type: ignore[arg-type]
    running = asyncio.create_task(process.run())
    try:
        await asyncio.sleep(0.3)  # A's report holds the claim lock; the claim loop waits
        release_b.set()
        for _ in range(100):
            if process._outbox:
                break
            await asyncio.sleep(0.01)
        opened = time.monotonic()
        server.gate.set()
        for _ in range(300):
            if "b" in server.reported:
                break
            await asyncio.sleep(0.01)
        assert "b" in server.reported and server.reported["b"] - opened < 2
    finally:
        release_b.set()
        process.stop()
        await asyncio.wait_for(running, 15)
