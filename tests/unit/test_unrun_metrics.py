"""Jobs that end before any worker runs them are counted in ``inferq_jobs_total`` too."""

from __future__ import annotations

import pytest

from inferq.core.errors import DeadlineExceeded
from inferq.core.events import JobEvents
from inferq.core.service import JobService
from inferq.core.states import ServiceClass
from inferq.core.work import ChatMessage, ChatRequest
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.runner.metrics import Metrics
from inferq.store.memory import MemoryStore


def jobs_total(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["model"], s.labels["class"], s.labels["outcome"]): s.value
        for family in metrics.registry.collect()
        if family.name == "inferq_jobs"
        for s in family.samples
        if s.name == "inferq_jobs_total"
    }


async def test_a_queued_job_cancelled_or_expired_is_counted() -> None:
    store, metrics, now = MemoryStore(), Metrics(), [100.0]
    registry = ModelRegistry({"fake": ModelSpec(name="fake", engine="fake", context_length=64)})
    jobs = JobService(
        store=store, models=registry, events=JobEvents(), clock=lambda: now[0],
        ended_unrun=metrics.job_ended_unrun,
    )  # fmt: skip
    request = ChatRequest(messages=(ChatMessage("user", "hi"),), max_tokens=4)
    queued = await jobs.submit(tenant="t", model="fake", request=request, origin="together")
    sync = await jobs.submit(
        tenant="t", model="fake", request=request, origin="openai",
        service_class=ServiceClass.INTERACTIVE, timeout=5,
    )  # fmt: skip
    assert jobs_total(metrics) == {}
    await jobs.cancel(queued.id, tenant="t")
    now[0] += 10  # past the sync request's deadline, still queued
    with pytest.raises(DeadlineExceeded):
        await jobs.wait(sync.id, tenant="t", deadline=now[0])
    for _ in range(2):  # Together's queue/clear
        await jobs.submit(tenant="t", model="fake", request=request, origin="together")
    assert await jobs.clear(tenant="t", model="fake") == 2
    assert jobs_total(metrics) == {
        ("fake", "async", "cancelled"): 3.0,
        ("fake", "interactive", "expired"): 1.0,
    }
