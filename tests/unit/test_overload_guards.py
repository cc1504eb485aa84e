"""The in-flight bound (api/ratelimit.py) and the queue bounds (core/limits.py) alone."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from inferq.api.dialects import DIALECTS
from inferq.api.ratelimit import InflightLimitMiddleware
from inferq.core.errors import QueueFull
from inferq.core.limits import Overloaded, QueueBounds, check_queue
from inferq.core.models import Job
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatMessage, ChatRequest
from inferq.store.memory import MemoryStore


async def test_past_the_in_flight_bound_a_503_at_once_but_never_for_health() -> None:
    release = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app = InflightLimitMiddleware(slow, dialects=DIALECTS, limit=1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = asyncio.create_task(client.get("/v1/models"))
        await asyncio.sleep(0.05)
        refused = await client.get("/v1/models")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "overloaded"  # OpenAI's shape
        health = asyncio.create_task(client.get("/healthz"))
        await asyncio.sleep(0.05)
        release.set()
        assert (await first).status_code == 200 and (await health).status_code == 200
        assert app.inflight == 0


def job(tenant: str, klass: ServiceClass = ServiceClass.ASYNC) -> Job:
    return Job(
        id=f"{tenant}-{id(object())}-{klass}",
        tenant=tenant,
        model="m",
        origin="t",
        service_class=klass,
        priority=0,
        state=JobState.QUEUED,
        request=ChatRequest(messages=(ChatMessage("user", "x"),)),
        created_at=0,
    )


async def test_queue_bounds_per_tenant_and_in_all() -> None:
    store = MemoryStore()
    bounds = QueueBounds(per_tenant=2, total=3)
    for i in range(2):
        await check_queue(store, bounds, "a")
        await store.insert_job(job("a").evolve(id=f"a{i}"))
    await store.insert_job(job("a", ServiceClass.BATCH).evolve(id="row"))  # rows aside
    with pytest.raises(QueueFull) as full:
        await check_queue(store, bounds, "a")
    assert not isinstance(full.value, Overloaded) and full.value.retry_after == 2
    await check_queue(store, bounds, "b")
    await store.insert_job(job("b").evolve(id="b0"))
    with pytest.raises(Overloaded):
        await check_queue(store, bounds, "b")
    await check_queue(store, QueueBounds(), "b")  # no bounds: nothing counted
