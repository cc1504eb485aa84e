"""The HTTP layer in-process: routing, auth, error shapes (memory store, fake engine).

The same behaviour is checked against a real server and the official SDKs in
tests/integration; these run in milliseconds and pin the exact bodies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inferq.api.app import create_app
from inferq.config import Settings
from inferq.core.keys import KeyService
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.store.memory import MemoryStore


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = MemoryStore()
    registry = ModelRegistry(
        {"fake": ModelSpec(name="fake", engine="fake", context_length=128, slots=2)}
    )
    settings = Settings(data_dir=tmp_path, max_body_bytes=4096)
    app = create_app(settings, store=store, registry=registry)
    with TestClient(app) as test_client:
        _, secret = asyncio.run(KeyService(store).create(name="a", tenant="ta"))
        test_client.headers["authorization"] = f"Bearer {secret}"
        yield test_client


CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}


def test_openai_chat_completion(client: TestClient) -> None:
    body = client.post("/v1/chat/completions", json=CHAT).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: hi there"}
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 3


def test_openai_stream_ends_with_done(client: TestClient) -> None:
    with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**CHAT, "model": "nope"}, "model"),
        ({**CHAT, "messages": []}, "messages"),
        ({**CHAT, "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "max_tokens": "many"}, "max_tokens"),
        ({**CHAT, "max_tokens": 4096}, "max_tokens"),
        ({"messages": CHAT["messages"]}, "model"),
    ],
)
def test_openai_bad_input_names_the_field(
    client: TestClient, body: dict[str, object], param: str
) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert 400 <= response.status_code < 500
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["param"] == param


def test_text_the_input_check_refuses_is_named_by_its_field_in_each_dialect(
    client: TestClient,
) -> None:
    nul = [{"role": "user", "content": "a\u0000b"}]
    openai = client.post("/v1/chat/completions", json={**CHAT, "messages": nul})
    assert openai.status_code == 400
    assert openai.json()["error"]["param"] == "messages.0.content"
    together = client.post("/v1/queue/submit", json={"model": "fake", "payload": {"messages": nul}})
    assert together.status_code == 400 and together.json()["param"] == "payload.messages.0.content"
    body = {"model": "fake", "messages": nul, "max_output": 5, "temperature": 0}
    infera = client.post("/submit_job", json=body)
    assert infera.status_code == 422
    assert infera.json()["detail"][0]["loc"] == ["body", "messages", "0", "content"]
    assert "NUL" in infera.json()["detail"][0]["msg"]


def test_malformed_json_in_each_dialect(client: TestClient) -> None:
    raw = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    openai = client.post("/v1/chat/completions", **raw)  # type: ignore[arg-type]
    assert openai.status_code == 400 and openai.json()["error"]["param"] == "body"
    together = client.post("/v1/queue/submit", **raw)  # type: ignore[arg-type]
    assert together.status_code == 400 and together.json()["param"] == "body"
    infera = client.post("/submit_job", **raw)  # type: ignore[arg-type]
    assert infera.status_code == 422 and infera.json()["detail"][0]["type"] == "json_invalid"


def test_body_over_the_limit_is_413_in_the_dialect_shape(client: TestClient) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = client.post("/v1/chat/completions", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_missing_and_bad_keys_are_401_in_each_dialect(client: TestClient) -> None:
    del client.headers["authorization"]
    assert client.post("/v1/chat/completions", json=CHAT).json()["error"]["code"] == (
        "invalid_api_key"
    )
    bad = {"authorization": "Bearer iq-nope"}
    together = client.get("/v1/queue/metrics?model=fake", headers=bad)
    assert together.status_code == 401 and together.json()["type"] == "authentication_error"
    infera = client.get("/available_models", headers={"api_key": "iq-nope"})
    assert infera.status_code == 401 and infera.json() == {"detail": "the API key is not valid"}


def test_together_submit_status_and_other_tenant(client: TestClient) -> None:
    submitted = client.post(
        "/v1/queue/submit", json={"model": "fake", "payload": CHAT, "priority": 2}
    ).json()
    request_id = submitted["requestId"]
    status = client.get(f"/v1/queue/status?request_id={request_id}&model=fake").json()
    assert status["request_id"] == request_id and status["priority"] == 2
    assert status["inputs"] == CHAT
    store: MemoryStore = client.app.state.runtime.store  # type: ignore[attr-defined]
    _, other = asyncio.run(KeyService(store).create(name="b", tenant="tb"))
    hidden = client.get(
        f"/v1/queue/status?request_id={request_id}&model=fake",
        headers={"authorization": f"Bearer {other}"},
    )
    assert hidden.status_code == 404 and hidden.json()["type"] == "not_found_error"


def test_infera_result_for_unknown_and_malformed_ids(client: TestClient) -> None:
    unknown = client.get("/get_result/3f1c1a44-5d4f-4c1e-9a53-2f5c8f9d1e2a")
    assert unknown.status_code == 404 and "not found" in unknown.json()["detail"]
    assert client.get("/get_result/not-a-uuid").status_code == 422


def test_health_and_models(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["fake"]
    assert client.get("/v1/models/fake").json()["object"] == "model"
    assert client.get("/v1/models/nope").status_code == 404
