"""A streamed sync request takes the path of the plain one: subscribed to its job before
the insert, claimed in the insert's transaction where the worker has a free slot, every
piece of text sent although the job may start before the stream does, and the
subscription closed however the response ends (memory store, fake engine, in process;
the fake engine continues no plain prompt, so a streamed text completion is checked on the
real model in tests/integration/test_structured.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.requests import ClientDisconnect
from starlette.types import Message

from inferq.api.app import create_app
from inferq.api.deps import Services
from inferq.api.sync import event_stream
from inferq.config import Settings
from inferq.core.events import JobEvents
from inferq.core.keys import KeyService
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.store.memory import MemoryStore
from tests.support.calls import record_calls

PROMPT = [{"role": "user", "content": "hi there"}]


@dataclass
class Rig:
    client: TestClient
    calls: list[str]

    @property
    def hub(self) -> JobEvents:
        services: Services = self.client.app.state.services  # type: ignore[attr-defined]
        return services.jobs.events


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    store = MemoryStore()
    calls = record_calls(store, "insert_job", "insert_and_claim")
    registry = ModelRegistry(
        {"fake": ModelSpec(name="fake", engine="fake", context_length=128, slots=2)}
    )
    app = create_app(Settings(data_dir=tmp_path), store=store, registry=registry)
    with TestClient(app) as client:
        _, secret = asyncio.run(KeyService(store).create(name="a", tenant="ta"))
        client.headers["authorization"] = f"Bearer {secret}"
        client.headers["x-api-key"] = secret
        client.headers["anthropic-version"] = "2023-06-01"
        yield Rig(client, calls)


def _events(rig: Rig, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with rig.client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    return [json.loads(line[6:]) for line in lines if line != "data: [DONE]"]


@pytest.mark.parametrize(
    ("path", "body", "text_of"),
    [
        (
            "/v1/chat/completions",
            {"model": "fake", "messages": PROMPT, "max_tokens": 5, "stream": True},
            lambda e: "".join(c["delta"].get("content") or "" for c in e["choices"]),
        ),
        (
            "/v1/messages",
            {"model": "fake", "messages": PROMPT, "max_tokens": 5, "stream": True},
            lambda e: (
                e.get("delta", {}).get("text", "") if e["type"] == "content_block_delta" else ""
            ),
        ),
    ],
    ids=["openai-chat", "anthropic-messages"],
)
def test_a_stream_is_claimed_with_its_insert_and_sends_the_whole_text(
    rig: Rig, path: str, body: dict[str, Any], text_of: Any
) -> None:
    for _ in range(3):
        rig.calls.clear()
        events = _events(rig, path, body)
        # (the memory store's insert_and_claim inserts, then claims)
        assert rig.calls[0] == "insert_and_claim"
        assert "".join(text_of(e) for e in events) == "echo: hi there"
        assert rig.hub._subs == {}, "the stream's subscription was left open"


def test_a_refused_stream_leaves_no_subscription(rig: Rig) -> None:
    body = {"model": "nope", "messages": PROMPT, "max_tokens": 5, "stream": True}
    assert rig.client.post("/v1/chat/completions", json=body).status_code == 404
    assert rig.hub._subs == {}


async def test_the_subscription_is_closed_when_the_events_never_start() -> None:
    """A client gone before the first byte: the response fails at its start, and the
    generator that would have closed the subscription is never run."""
    hub = JobEvents()
    sub = hub.subscribe("j1", finished=True)
    started = False

    async def events() -> AsyncIterator[str]:
        nonlocal started
        started = True
        try:
            yield "data: x\n\n"
        finally:
            sub.close()

    async def receive() -> Message:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        raise OSError("the client is gone")

    response = event_stream(events(), closes=sub)
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
    with pytest.raises(ClientDisconnect):
        await response(scope, receive, send)
    assert not started
    assert hub._subs == {}
