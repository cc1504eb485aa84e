"""A sync job that this process's worker has a free slot for is claimed in the
transaction that stores it (JobService.offers, Worker.offer): one commit, no wait for the
claim loop, and never more jobs running than the engine has slots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from inferq.core.errors import EngineError
from inferq.core.events import JobEvents
from inferq.core.models import Job, JobFilter
from inferq.core.service import JobService
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatMessage, ChatRequest
from inferq.engines.base import ModelSpec
from inferq.engines.fake import FakeEngine
from inferq.engines.registry import ModelRegistry
from inferq.runner.worker import Worker, WorkerSettings
from inferq.store.sqlite import SQLiteStore
from tests.support.calls import record_calls


@dataclass
class Rig:
    store: SQLiteStore
    jobs: JobService
    worker: Worker
    engine: FakeEngine
    calls: list[str]


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    slots, token_delay = getattr(request, "param", (1, 0.0))
    store = SQLiteStore(tmp_path / "jobs.db")
    await store.open()
    calls = record_calls(store, "insert_job", "claim", "insert_and_claim")
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
    jobs = JobService(store=store, models=registry, events=events)
    # no poll for 30 s: every claim below is one an event or a submit asked for; an offer
    # waits as long as it takes for a claim under way (a loaded machine can take longer
    # than the default's 50 ms), but for the test that sets its own patience
    settings = WorkerSettings(lease_seconds=30, poll_interval=30, tick=0.05, offer_wait=10)
    worker = Worker(store=store, registry=registry, events=events, settings=settings)
    await worker.start()
    jobs.offers = worker
    engine = registry.get("fake")
    assert isinstance(engine, FakeEngine)
    await asyncio.sleep(0.05)  # the claim loop's first (empty) claim
    calls.clear()
    yield Rig(store, jobs, worker, engine, calls)
    await worker.stop()
    await registry.close()
    await store.close()


async def submit(
    rig: Rig,
    text: str,
    service_class: ServiceClass,
    *,
    start_now: bool = True,
    job_id: str | None = None,
) -> Job:
    return await rig.jobs.submit(
        tenant="t",
        model="fake",
        request=ChatRequest(messages=(ChatMessage("user", text),), max_tokens=8),
        origin="test",
        service_class=service_class,
        timeout=10,
        start_now=start_now,
        job_id=job_id,
    )


async def run_sync(rig: Rig, text: str) -> Job:
    """A sync job as the API runs one: subscribed to its events before it is stored, and
    waited for through them. (A wait that reads the store can see the job's end before
    the worker has freed its slot, and the next submit then finds no slot to claim.)"""
    job_id, sub = rig.jobs.watch(text=False)
    job = await submit(rig, text, ServiceClass.INTERACTIVE, job_id=job_id)
    return await rig.jobs.wait(job.id, tenant="t", deadline=time.time() + 10, watching=(sub, job))


async def wait(rig: Rig, job: Job) -> Job:
    return await rig.jobs.wait(job.id, tenant="t", deadline=time.time() + 10)


async def test_a_sync_job_is_claimed_as_it_is_stored(rig: Rig) -> None:
    job = await submit(rig, "one two", ServiceClass.INTERACTIVE)
    assert job.state is JobState.QUEUED and job.seq > 0  # as inserted
    done = await wait(rig, job)
    assert done.state is JobState.SUCCEEDED and done.attempt == 1
    assert done.result is not None and done.result.text == "echo: one two"
    # the claim went with the insert; and since the loop's last claim found nothing and
    # nothing was submitted since, the freed slot sends it to the store no more
    await asyncio.sleep(0.1)
    assert rig.calls == ["insert_and_claim"]
    assert done.claimed_at == done.created_at
    assert rig.engine.calls == 1


async def test_back_to_back_sync_jobs_wait_for_the_loops_claim_and_go_with_their_insert(
    rig: Rig,
) -> None:
    # each job's end makes the claim loop look for more work; the next submit, arriving
    # while that claim is under way, waits for it instead of taking the slow path
    # On a loaded machine a job's end can be committed (a read of the store sees it) a
    # while before the worker hears back and frees its slot; a wait that read the store
    # then would return early, and the next submit find no free slot. The API's waits
    # take the job's end from the worker's event instead (run_sync).
    complete, get_job = rig.store.complete, rig.store.get_job

    async def slow_to_return(*args: Any, **kw: Any) -> bool:
        done = await complete(*args, **kw)
        await asyncio.sleep(0.05)
        return done

    async def slow_read(*args: Any, **kw: Any) -> Job | None:
        await asyncio.sleep(0.02)
        return await get_job(*args, **kw)

    rig.store.complete = slow_to_return  # type: ignore[method-assign]
    rig.store.get_job = slow_read  # type: ignore[method-assign]
    for n in range(20):
        done = await run_sync(rig, f"job {n}")
        assert done.state is JobState.SUCCEEDED
    assert rig.calls.count("insert_and_claim") == 20
    assert "insert_job" not in rig.calls


async def test_a_submit_does_not_wait_past_its_patience_for_a_slow_claim(rig: Rig) -> None:
    # the loop's claim hangs (a store under load); a sync submit waits offer_wait for it,
    # then stores its job the ordinary way, and the loop runs it once the claim is back
    rig.worker.settings = replace(rig.worker.settings, offer_wait=0.05)
    asked, gate = asyncio.Event(), asyncio.Event()
    real = rig.store.claim

    async def slow_claim(*args: Any, **kw: Any) -> list[Job]:
        asked.set()
        await gate.wait()
        return await real(*args, **kw)

    rig.store.claim = slow_claim  # type: ignore[method-assign]
    queued = await submit(rig, "queued", ServiceClass.ASYNC)  # wakes the loop: it claims
    await asyncio.wait_for(asked.wait(), 5)
    try:
        sync = await asyncio.wait_for(submit(rig, "sync", ServiceClass.INTERACTIVE), 5)
        assert rig.calls == ["insert_job", "insert_job"]  # neither insert claimed
    finally:
        gate.set()
    assert (await wait(rig, queued)).state is JobState.SUCCEEDED
    assert (await wait(rig, sync)).state is JobState.SUCCEEDED
    assert "insert_and_claim" not in rig.calls


async def test_a_job_failed_for_a_retry_runs_again_at_once(rig: Rig) -> None:
    real = rig.engine._generate
    failed: list[str] = []

    async def flaky(request: ChatRequest, call: Any) -> Any:
        if not failed:
            failed.append(request.messages[-1].content)
            error = EngineError("the engine stumbled")
            error.retryable = True
            raise error
        return await real(request, call)

    rig.engine._generate = flaky  # type: ignore[method-assign]
    started = time.monotonic()
    done = await wait(rig, await submit(rig, "again", ServiceClass.INTERACTIVE))
    assert done.state is JobState.SUCCEEDED and done.attempt == 2 and failed == ["again"]
    # queued again, it is claimed at once, not at the next poll (30 s here)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("service_class", "start_now"),
    [(ServiceClass.ASYNC, True), (ServiceClass.INTERACTIVE, False)],
)
async def test_queued_work_and_unwatched_jobs_are_not_claimed_with_the_insert(
    rig: Rig, service_class: ServiceClass, start_now: bool
) -> None:
    # a stream subscribes once its submit returned: its job must not start before
    job = await submit(rig, "one two", service_class, start_now=start_now)
    done = await wait(rig, job)
    assert done.state is JobState.SUCCEEDED
    assert rig.calls[:2] == ["insert_job", "claim"]  # the claim loop, woken by the submit
    assert "insert_and_claim" not in rig.calls


@pytest.mark.parametrize("rig", [(1, 0.01)], indirect=True)
async def test_concurrent_sync_jobs_never_run_more_than_the_slots(rig: Rig) -> None:
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, len(rig.worker.running))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        jobs = await asyncio.gather(
            *(submit(rig, f"job {n} a b", ServiceClass.INTERACTIVE) for n in range(6))
        )
        done = [await wait(rig, job) for job in jobs]
    finally:
        watcher.cancel()
    assert all(j.state is JobState.SUCCEEDED and j.attempt == 1 for j in done)
    assert [j.result.text for j in done if j.result is not None] == [
        f"echo: job {n} a b" for n in range(6)
    ]
    assert most == 1
    assert rig.engine.calls == 6  # each ran once
    assert rig.calls.count("insert_and_claim") >= 1


async def test_a_claimed_job_runs_even_when_its_submitter_is_cancelled(rig: Rig) -> None:
    submitting = asyncio.create_task(submit(rig, "left alone", ServiceClass.INTERACTIVE))
    await asyncio.sleep(0)  # the insert is on its way to the store
    submitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await submitting
    for _ in range(500):
        stored = await rig.store.list_jobs(JobFilter(tenant="t"))
        if stored and stored[0].state.terminal:
            break
        await asyncio.sleep(0.01)
    assert [(j.state, j.attempt) for j in stored] == [(JobState.SUCCEEDED, 1)]
    assert rig.engine.calls == 1
    assert rig.calls[0] == "insert_and_claim"  # started by the offer, not by a claim
