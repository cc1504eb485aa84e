"""Anthropic's Messages API in-process (memory store, fake engine): the translation to
the core request and back, the event stream, the errors and the key header."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inferq.api.anthropic.schemas import MessagesRequest
from inferq.api.anthropic.translate import render_message, stop_reason
from inferq.api.app import create_app
from inferq.config import Settings
from inferq.core.keys import KeyService
from inferq.core.models import Job
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatMessage, ChatResult, Usage
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.store.memory import MemoryStore

MESSAGE = {"model": "fake", "max_tokens": 5, "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = MemoryStore()
    registry = ModelRegistry(
        {"fake": ModelSpec(name="fake", engine="fake", context_length=128, slots=2)}
    )
    app = create_app(Settings(data_dir=tmp_path), store=store, registry=registry)
    with TestClient(app) as test_client:
        _, secret = asyncio.run(KeyService(store).create(name="a", tenant="ta"))
        test_client.headers["x-api-key"] = secret
        test_client.headers["anthropic-version"] = "2023-06-01"
        yield test_client


def test_the_request_becomes_a_core_chat_request() -> None:
    body = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 7,
            "system": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
                {"role": "user", "content": "Bye"},
            ],
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 3,
            "metadata": {"user_id": "u"},
        }
    )
    request = body.to_request()
    assert request.messages == (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "Hello"),
        ChatMessage("user", "Bye"),
    )
    assert (request.max_tokens, request.stop) == (7, ("END",))
    assert (request.temperature, request.top_p, request.top_k) == (0.5, 0.9, 3)


def _job(result: ChatResult) -> Job:
    return Job(
        id="j1",
        tenant="t",
        model="m",
        origin="anthropic",
        service_class=ServiceClass.INTERACTIVE,
        priority=0,
        state=JobState.SUCCEEDED,
        request=MessagesRequest.model_validate(MESSAGE).to_request(),
        created_at=0.0,
        result=result,
        usage=result.usage,
    )


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (ChatResult("a", "stop", Usage()), "end_turn"),
        (ChatResult("a", "length", Usage()), "max_tokens"),
        (ChatResult("a", "stop", Usage(), stop_sequence="END"), "stop_sequence"),
    ],
)
def test_stop_reasons(result: ChatResult, reason: str) -> None:
    assert stop_reason(result) == reason


def test_the_message_shape_and_cached_tokens_apart() -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=3, cached_tokens=4)
    message = render_message(_job(ChatResult("Hi.", "stop", usage, stop_sequence="X")))
    assert message == {
        "id": "msg_j1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "Hi."}],
        "model": "m",
        "stop_reason": "stop_sequence",
        "stop_sequence": "X",
        "usage": {
            "input_tokens": 6,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 4,
        },
    }


def test_a_message_through_the_fake_engine(client: TestClient) -> None:
    response = client.post("/v1/messages", json=MESSAGE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"] == [{"type": "text", "text": "echo: hi there"}]
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"]["output_tokens"] == 3
    cut = client.post("/v1/messages", json={**MESSAGE, "max_tokens": 2}).json()
    assert cut["stop_reason"] == "max_tokens"


def _events(response: Any) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        name_line, data_line = block.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    return events


def test_the_stream_is_anthropics_event_sequence(client: TestClient) -> None:
    with client.stream("POST", "/v1/messages", json={**MESSAGE, "stream": True}) as response:
        response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    names = [name for name, _ in events]
    # a job that ended before the stream subscribed comes as one piece
    deltas = names.count("content_block_delta")
    assert deltas >= 1
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "echo: hi there"
    start, final = events[0][1]["message"], events[-2][1]
    assert start["id"].startswith("msg_") and start["content"] == []
    assert final["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert final["usage"]["output_tokens"] == 3


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({k: v for k, v in MESSAGE.items() if k != "max_tokens"}, "max_tokens"),
        ({**MESSAGE, "messages": []}, "messages"),
        ({**MESSAGE, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        (
            {
                **MESSAGE,
                "messages": [
                    {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}
                ],
            },
            "'tool_use'",
        ),
        ({**MESSAGE, "tools": [{"type": "web_search_20250305", "name": "s"}]}, "tools.0.type"),
        ({**MESSAGE, "tool_choice": {"type": "any"}}, "tool_choice"),
        ({**MESSAGE, "temperature": 1.5}, "temperature"),
    ],
)
def test_bad_input_is_a_400_in_anthropics_shape(
    client: TestClient, body: dict[str, Any], words: str
) -> None:
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert words in error["error"]["message"]


def test_errors_of_the_other_kinds(client: TestClient) -> None:
    missing = client.post("/v1/messages", json={**MESSAGE, "model": "nope"})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    bad_key = client.post("/v1/messages", json=MESSAGE, headers={"x-api-key": "wrong"})
    assert bad_key.status_code == 401
    assert bad_key.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": bad_key.json()["error"]["message"]},
    }
    # the rest of /v1/ stays OpenAI's
    other = client.post("/v1/chat/completions", json={}, headers={"x-api-key": "wrong"})
    assert "type" not in other.json() and other.json()["error"]["type"]
