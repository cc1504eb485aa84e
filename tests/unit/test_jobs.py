"""JobService and Worker together, on the in-memory store and the fake engine."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from inferq.core.errors import Conflict, DeadlineExceeded, InvalidRequest, NotFound
from inferq.core.events import JobEvents
from inferq.core.models import Job
from inferq.core.ports import ClaimOrder
from inferq.core.service import JobService, ServiceLimits
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatMessage, ChatRequest, ChatResult
from inferq.engines.base import ModelSpec
from inferq.engines.fake import FAIL_TRIGGER, FakeEngine
from inferq.engines.registry import ModelRegistry
from inferq.runner.worker import Worker, WorkerSettings
from inferq.store.memory import MemoryStore
from inferq.store.sqlite import SQLiteStore


@dataclass
class Rig:
    store: MemoryStore
    registry: ModelRegistry
    jobs: JobService
    worker: Worker

    @property
    def engine(self) -> FakeEngine:
        engine = self.registry.get("fake")
        assert isinstance(engine, FakeEngine)
        return engine


def request(text: str = "hello world", max_tokens: int | None = 8) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),), max_tokens=max_tokens)


@pytest.fixture
def slots() -> int:
    return 1


@pytest.fixture
def token_delay() -> float:
    return 0.0


@pytest.fixture
async def rig(slots: int, token_delay: float) -> AsyncIterator[Rig]:
    store = MemoryStore()
    await store.open()
    spec = ModelSpec(
        name="fake",
        engine="fake",
        context_length=64,
        slots=slots,
        options={"token_delay": token_delay},
    )
    registry = ModelRegistry({"fake": spec})
    await registry.start()
    events = JobEvents()
    jobs = JobService(store=store, models=registry, events=events, limits=ServiceLimits(4))
    worker = Worker(
        store=store,
        registry=registry,
        events=events,
        settings=WorkerSettings(lease_seconds=3, poll_interval=0.05, tick=0.05),
    )
    jobs.offers = worker  # as the runtime wires them
    yield Rig(store, registry, jobs, worker)
    await worker.stop()
    await registry.close()
    await store.close()


async def submit(rig: Rig, text: str = "hello world", **kw: object) -> Job:
    return await rig.jobs.submit(
        tenant="t",
        model="fake",
        request=request(text),
        origin="test",
        **kw,  # type: ignore[arg-type]
    )


async def wait(rig: Rig, job: Job, timeout: float = 5.0) -> Job:
    return await rig.jobs.wait(job.id, tenant="t", deadline=time.time() + timeout)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``check`` to hold: a loaded machine may take a while to get there."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        await asyncio.sleep(0.01)


def state(rig: Rig, job: Job) -> JobState:
    return rig.store.jobs[job.id].state


async def test_submitted_job_runs_to_completion(rig: Rig) -> None:
    await rig.worker.start()
    job = await submit(rig, "one two three", info={"mine": 1})
    assert job.state is JobState.QUEUED
    done = await wait(rig, job)
    assert done.state is JobState.SUCCEEDED
    assert done.result is not None and done.result.text == "echo: one two three"
    assert done.usage.completion_tokens == 4 and done.usage.prompt_tokens == 4
    assert done.info == {"mine": 1, "progress": 1}


async def test_job_ids_are_time_ordered_uuids_unless_the_caller_names_one(rig: Rig) -> None:
    # the store's index on jobs.id takes ids of one moment on one page (inferq.core.ids)
    first = await submit(rig, "one")
    await asyncio.sleep(0.002)
    second = await submit(rig, "two")
    assert uuid.UUID(first.id).version == uuid.UUID(second.id).version == 7
    assert first.id < second.id
    watched, sub = rig.jobs.watch(text=False)
    sub.close()
    assert uuid.UUID(watched).version == 7
    named = await rig.jobs.submit(
        tenant="t", model="fake", request=request(), origin="test", job_id=str(uuid.uuid4())
    )
    assert uuid.UUID(named.id).version == 4


async def test_unknown_model_and_oversized_max_tokens_are_refused(rig: Rig) -> None:
    with pytest.raises(NotFound) as missing:
        await rig.jobs.submit(tenant="t", model="nope", request=request(), origin="test")
    assert missing.value.param == "model"
    with pytest.raises(InvalidRequest) as too_big:
        await rig.jobs.submit(
            tenant="t", model="fake", request=request(max_tokens=64), origin="test"
        )
    assert too_big.value.param == "max_tokens"
    assert rig.store.jobs == {}


@pytest.mark.parametrize("token_delay", [0.02])
async def test_priority_order_then_fifo(rig: Rig) -> None:
    blocker = await submit(rig, "a b c d e f g", priority=100)
    await rig.worker.start()
    await asyncio.sleep(0.05)  # the blocker holds the only slot
    low = await submit(rig, "low", priority=0)
    high1 = await submit(rig, "high one", priority=5)
    high2 = await submit(rig, "high two", priority=5)
    sync = await submit(rig, "sync", service_class=ServiceClass.INTERACTIVE, priority=-5)
    finished = [await wait(rig, j) for j in (blocker, low, high1, high2, sync)]
    order = sorted(finished, key=lambda j: j.claimed_at or 0)
    # the sync request preempted the blocker, which ran again next, as its priority says
    assert [j.id for j in order] == [sync.id, blocker.id, high1.id, high2.id, low.id]
    assert all(j.state is JobState.SUCCEEDED and j.attempt == 1 for j in finished)


@pytest.mark.parametrize(("slots", "token_delay"), [(2, 0.05)])
async def test_a_sync_request_preempts_queued_work_which_runs_again_once(rig: Rig) -> None:
    await rig.worker.start()
    queued = [await submit(rig, f"job {n} " + "x " * 20) for n in range(4)]
    # queued work fills every slot
    await until(lambda: sum(state(rig, j) is JobState.RUNNING for j in queued) == 2)
    sync = await submit(rig, "quick", service_class=ServiceClass.INTERACTIVE)
    done = await wait(rig, sync)
    assert done.state is JobState.SUCCEEDED
    # it did not wait behind the queue: it started before any queued job finished
    assert done.claimed_at is not None
    assert all(
        (j.finished_at or float("inf")) > done.claimed_at
        for j in rig.store.jobs.values()
        if j.id != sync.id
    )
    finished = [await wait(rig, j) for j in queued]
    # the preempted job ran again from the start; no attempt was used up, no output lost
    assert all(j.state is JobState.SUCCEEDED and j.attempt == 1 for j in finished)
    texts = [j.result.text for j in finished if isinstance(j.result, ChatResult)]
    assert texts == [f"echo: job {n} x x x x x" for n in range(4)]  # max_tokens 8
    assert rig.engine.calls == 6  # four jobs, one of them twice, and the sync request


@pytest.mark.parametrize(("slots", "token_delay"), [(2, 0.05)])
async def test_queued_work_preempts_batch_rows_but_not_the_same_class(rig: Rig) -> None:
    await rig.worker.start()
    rows = [
        await submit(rig, f"row {n} " + "x " * 20, service_class=ServiceClass.BATCH)
        for n in range(3)
    ]
    await asyncio.sleep(0.1)
    urgent = await submit(rig, "urgent", priority=10)
    done = await wait(rig, urgent)
    assert done.claimed_at is not None
    assert all((j.finished_at or float("inf")) > done.claimed_at for j in rows)
    assert [(await wait(rig, j)).attempt for j in rows] == [1, 1, 1]
    # a higher priority within the same class waits for a free slot (the blockers run
    # for 1.5 s, long enough for a loaded machine to look in the meantime)
    blockers = [
        await rig.jobs.submit(
            tenant="t", model="fake", request=request("b " * 30, max_tokens=30), origin="test"
        )
        for _ in range(2)
    ]
    await until(lambda: all(state(rig, j) is JobState.RUNNING for j in blockers))
    higher = await submit(rig, "higher", priority=50)
    await asyncio.sleep(0.1)
    assert (await rig.jobs.get(higher.id, tenant="t")).state is JobState.QUEUED
    for job in (*blockers, higher):
        assert (await wait(rig, job)).attempt == 1


@pytest.mark.parametrize("token_delay", [0.05])
async def test_cancel_running_job_stops_generation_and_frees_the_slot(rig: Rig) -> None:
    await rig.worker.start()
    long = await submit(rig, "w " * 50)
    await until(lambda: state(rig, long) is JobState.RUNNING)
    cancelled = await rig.jobs.cancel(long.id, tenant="t")
    assert cancelled.state is JobState.CANCELLED
    nxt = await submit(rig, "next")
    done = await wait(rig, nxt, timeout=1.0)
    assert done.state is JobState.SUCCEEDED
    final = await rig.jobs.get(long.id, tenant="t")
    assert final.state is JobState.CANCELLED and final.result is None
    with pytest.raises(Conflict):
        await rig.jobs.cancel(long.id, tenant="t")


async def test_cancel_queued_job_and_other_tenant(rig: Rig) -> None:
    job = await submit(rig)
    with pytest.raises(NotFound):
        await rig.jobs.cancel(job.id, tenant="someone-else")
    assert (await rig.jobs.cancel(job.id, tenant="t")).state is JobState.CANCELLED
    await rig.worker.start()
    await asyncio.sleep(0.1)
    assert (await rig.jobs.get(job.id, tenant="t")).state is JobState.CANCELLED


@pytest.mark.parametrize("token_delay", [0.05])
async def test_deadline_expires_the_job_and_aborts_it(rig: Rig) -> None:
    await rig.worker.start()
    job = await submit(rig, "w " * 50, service_class=ServiceClass.INTERACTIVE, timeout=0.2)
    with pytest.raises(DeadlineExceeded):
        await rig.jobs.wait(job.id, tenant="t", deadline=job.deadline_at or 0)
    assert (await rig.jobs.get(job.id, tenant="t")).state is JobState.EXPIRED
    await until(lambda: rig.worker.running == {})  # the abort reaches the engine


@pytest.mark.parametrize("token_delay", [0.01])
async def test_stream_yields_pieces_in_order(rig: Rig) -> None:
    await rig.worker.start()
    job = await submit(rig, "alpha beta gamma", service_class=ServiceClass.INTERACTIVE)
    *pieces, last = [p async for p in rig.jobs.stream(job.id, tenant="t", deadline=time.time() + 5)]
    assert all(isinstance(p, str) for p in pieces)
    assert "".join(str(p) for p in pieces) == "echo: alpha beta gamma"
    assert len(pieces) == 4
    assert isinstance(last, Job)
    assert last.id == job.id
    assert last.state is JobState.SUCCEEDED


async def test_engine_error_fails_without_retry(rig: Rig) -> None:
    await rig.worker.start()
    job = await submit(rig, FAIL_TRIGGER)
    done = await wait(rig, job)
    assert done.state is JobState.FAILED
    assert done.attempt == 1
    assert done.error is not None and "asked to fail" in done.error.message


async def test_job_of_a_dead_worker_is_reclaimed_and_done_once(rig: Rig) -> None:
    job = await submit(rig)
    # a worker that claimed the job and died: its lease simply runs out
    (claimed,) = await rig.store.claim(
        ClaimOrder(owner="dead", limit=1, lease_seconds=1), now=time.time() - 10
    )
    assert claimed.id == job.id
    await rig.worker.start()
    done = await wait(rig, job)
    assert done.state is JobState.SUCCEEDED
    assert done.retries == 1
    assert rig.engine.calls == 1


@pytest.mark.parametrize("token_delay", [0.05])
async def test_stopping_the_worker_hands_its_jobs_back(rig: Rig) -> None:
    await rig.worker.start()
    job = await submit(rig, "w " * 40)
    await until(lambda: state(rig, job) is JobState.RUNNING)
    await rig.worker.stop()
    handed_back = rig.store.jobs[job.id]
    assert handed_back.state is JobState.RUNNING
    assert handed_back.lease_expires_at is not None
    assert handed_back.lease_expires_at < time.time()


@pytest.mark.parametrize("token_delay", [0.05])
async def test_progress_is_published_while_generating(rig: Rig) -> None:
    await rig.worker.start()
    job = await rig.jobs.submit(
        tenant="t", model="fake", request=request("w " * 30, max_tokens=30), origin="test"
    )
    # 30 tokens take 1.5 s: the first progress is published well before the end
    await until(lambda: "progress" in rig.store.jobs[job.id].info)
    running = await rig.jobs.get(job.id, tenant="t")
    progress = running.info.get("progress")
    assert isinstance(progress, float) and 0 < progress < 1


@pytest.mark.parametrize(("slots", "token_delay"), [(2, 0.01)])
async def test_a_finished_job_makes_the_worker_claim_the_next_at_once(rig: Rig) -> None:
    # No poll would come for 30 s: only the worker's own finished job can wake it.
    rig.worker.settings = WorkerSettings(lease_seconds=30, poll_interval=30, tick=0.05)
    jobs = [await submit(rig, "a b c") for _ in range(3)]
    await rig.worker.start()
    done = [await wait(rig, job, timeout=5.0) for job in jobs]
    assert all(j.state is JobState.SUCCEEDED for j in done)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_watched_wait_takes_the_job_as_committed_without_reading_it_back(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Subscribed before the insert, a sync wait reads nothing back: this process's worker
    hands over the finished job, equal to what the store holds once it committed it."""
    store: MemoryStore | SQLiteStore = (
        MemoryStore() if backend == "memory" else SQLiteStore(tmp_path / "jobs.db")
    )
    await store.open()
    spec = ModelSpec(name="fake", engine="fake", context_length=64, slots=1)
    registry = ModelRegistry({"fake": spec})
    await registry.start()
    events = JobEvents()
    jobs = JobService(store=store, models=registry, events=events)
    worker = Worker(
        store=store,
        registry=registry,
        events=events,
        settings=WorkerSettings(lease_seconds=3, poll_interval=0.05, tick=0.05),
    )
    await worker.start()
    try:
        reads: list[str] = []
        real_get = store.get_job

        async def counted(job_id: str, *, tenant: str | None) -> Job | None:
            reads.append(job_id)
            return await real_get(job_id, tenant=tenant)

        for text in ("one two three", "four five"):
            reads.clear()
            job_id, sub = jobs.watch(text=False)
            job = await jobs.submit(
                tenant="t",
                model="fake",
                request=request(text),
                origin="test",
                info={"mine": 1},
                job_id=job_id,
                timeout=5,
            )
            monkeypatch.setattr(store, "get_job", counted)
            done = await jobs.wait(
                job.id, tenant="t", deadline=job.deadline_at or 0, watching=(sub, job)
            )
            assert reads == []
            monkeypatch.undo()
            assert done.state is JobState.SUCCEEDED
            assert done == await store.get_job(job.id, tenant="t")
            assert not events._subs  # the wait closed its subscription
    finally:
        await worker.stop()
        await registry.close()
        await store.close()


async def test_a_wait_takes_the_events_already_queued_and_keeps_its_deadline(rig: Rig) -> None:
    job_id, sub = rig.jobs.watch(text=False)
    job = await rig.jobs.submit(
        tenant="t", model="fake", request=request(), origin="test", job_id=job_id, timeout=5
    )
    ended = job.evolve(state=JobState.SUCCEEDED, finished_at=time.time())
    for event in ("one", " two", ended):  # a run of pieces, then the end, before the wait
        sub.queue.put_nowait(event)
    done = await rig.jobs.wait(job.id, tenant="t", deadline=time.time() + 5, watching=(sub, job))
    assert done is ended
    assert sub.queue.empty()
    assert not rig.jobs.events._subs  # the wait closed its subscription

    job_id, sub = rig.jobs.watch(text=False)
    job = await rig.jobs.submit(
        tenant="t", model="fake", request=request(), origin="test", job_id=job_id, timeout=5
    )
    sub.queue.put_nowait("one")
    with pytest.raises(DeadlineExceeded):  # past its deadline, events queued or not
        await rig.jobs.wait(job.id, tenant="t", deadline=time.time() - 1, watching=(sub, job))
    stored = await rig.store.get_job(job.id, tenant="t")
    assert stored is not None and stored.state is JobState.EXPIRED
