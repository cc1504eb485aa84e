"""Two deliverers on one store (two processes of a fleet): every event reaches the receiver
once, whichever of them fans it out or claims it, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferq.core.ports import Ending
from inferq.core.states import JobState
from inferq.core.webhooks import WebhookService
from inferq.runner.webhook_send import Sender
from inferq.runner.webhooks import Deliverer
from inferq.store.base import JobStore
from inferq.store.sqlite import SQLiteStore
from tests.contract.test_store_contract import make_job
from tests.support.postgres import postgres_store

EVENTS = 30


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "postgres":
        async with postgres_store() as pg:
            yield pg
        return
    the_store = SQLiteStore(tmp_path / "jobs.db")
    await the_store.open()
    yield the_store
    await the_store.close()


def header(head: bytes, name: bytes) -> str:
    found = re.search(rb"\r\n" + name + rb": *(\S+)", head.lower())
    assert found is not None, head
    return found.group(1).decode()


async def test_each_event_is_delivered_once_by_a_fleet_of_two(store: JobStore) -> None:
    received: Counter[str] = Counter()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(header(head, b"content-length")))
        received[header(head, b"webhook-id")] += 1
        await asyncio.sleep(0.01)  # a receiver that takes a moment: attempts overlap
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    service = WebhookService(store=store)
    await service.create(tenant="t1", url=f"http://127.0.0.1:{port}/hook")
    for _ in range(EVENTS):
        job = await store.insert_job(make_job().evolve(origin="together"))
        await store.finish(job.id, Ending(JobState.CANCELLED), tenant="t1", now=1.0)
    fleet = [Deliverer(store=store, sender=Sender(allow_private=True), owner=name) for name in "ab"]
    try:
        for _ in range(20):
            await asyncio.gather(*(d.turn() for d in fleet))
            if len(received) == EVENTS:
                break
    finally:
        for d in fleet:
            await d.stop()
        server.close()
    assert len(received) == EVENTS
    assert set(received.values()) == {1}, received
    [endpoint] = await service.endpoints(tenant="t1")
    history = await service.deliveries(endpoint.id, tenant="t1", limit=100)
    assert len(history) == EVENTS and {d.state for d in history} == {"delivered"}
