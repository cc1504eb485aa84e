"""``POST /v1/embeddings`` in-process (memory store, fake engines) and the registry's
embedding models. tests/integration/test_embeddings.py runs the real model."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inferq.api.app import create_app
from inferq.config import Settings
from inferq.core.errors import ConfigError, InvalidRequest, NotFound
from inferq.core.keys import KeyService
from inferq.core.states import ServiceClass
from inferq.core.work import ChatMessage, ChatRequest, EmbedRequest
from inferq.engines.base import ModelSpec
from inferq.engines.fake import fake_vector
from inferq.engines.registry import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_MODEL,
    ModelRegistry,
    default_specs,
    load_specs,
)
from inferq.store.memory import MemoryStore

DIMS = 16


def registry() -> ModelRegistry:
    return ModelRegistry(
        {
            "fake": ModelSpec(name="fake", engine="fake", context_length=128, slots=2),
            "emb": ModelSpec(
                name="emb",
                engine="fake",
                context_length=64,
                slots=2,
                options={"embedding": True, "dimensions": DIMS},
            ),
        }
    )


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = MemoryStore()
    settings = Settings(data_dir=tmp_path)
    app = create_app(settings, store=store, registry=registry())
    with TestClient(app) as test_client:
        _, secret = asyncio.run(KeyService(store).create(name="a", tenant="ta"))
        test_client.headers["authorization"] = f"Bearer {secret}"
        yield test_client


def test_embeddings_as_floats(client: TestClient) -> None:
    response = client.post("/v1/embeddings", json={"model": "emb", "input": ["a b c", "d"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == "emb"
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in body["data"])
    first = body["data"][0]["embedding"]
    assert len(first) == DIMS
    assert first == pytest.approx(list(fake_vector("a b c", DIMS)))
    assert math.fsum(x * x for x in first) == pytest.approx(1.0)


def test_a_single_string_and_base64(client: TestClient) -> None:
    as_floats = client.post("/v1/embeddings", json={"model": "emb", "input": "hello"}).json()
    as_b64 = client.post(
        "/v1/embeddings", json={"model": "emb", "input": "hello", "encoding_format": "base64"}
    ).json()
    assert len(as_floats["data"]) == 1
    raw = base64.b64decode(as_b64["data"][0]["embedding"])
    decoded = struct.unpack(f"<{DIMS}f", raw)
    assert decoded == pytest.approx(as_floats["data"][0]["embedding"], abs=1e-6)


def test_runs_as_an_interactive_job(client: TestClient) -> None:
    assert client.post("/v1/embeddings", json={"model": "emb", "input": "x"}).status_code == 200
    store: MemoryStore = client.app.state.runtime.store  # type: ignore[attr-defined]
    jobs = list(store.jobs.values())
    assert len(jobs) == 1
    assert jobs[0].service_class is ServiceClass.INTERACTIVE
    assert jobs[0].request == EmbedRequest(("x",))
    assert jobs[0].origin == "openai"


def test_matching_dimensions_are_accepted(client: TestClient) -> None:
    body = {"model": "emb", "input": "x", "dimensions": DIMS, "user": "u1"}
    assert client.post("/v1/embeddings", json=body).status_code == 200


def test_models_lists_the_embedding_model(client: TestClient) -> None:
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["emb", "fake"]


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [
        ({"model": "emb", "input": []}, "input", 400),
        ({"model": "emb", "input": ""}, "input", 400),
        ({"model": "emb", "input": ["ok", ""]}, "input.1", 400),
        ({"model": "emb", "input": ["x"] * 2049}, "input", 400),
        ({"model": "emb", "input": [1, 2, 3]}, "input.0", 400),
        ({"model": "emb", "input": [[1, 2], [3]]}, "input.0", 400),
        ({"model": "emb", "input": ["ok", 5.5]}, "input.1", 400),
        ({"model": "emb", "input": {"text": "x"}}, "input", 400),
        ({"model": "emb"}, "input", 400),
        ({"input": "x"}, "model", 400),
        ({"model": "fake", "input": "x"}, "model", 400),
        ({"model": "nope", "input": "x"}, "model", 404),
        ({"model": "emb", "input": "x", "dimensions": 3}, "dimensions", 400),
        ({"model": "emb", "input": "x", "encoding_format": "int8"}, "encoding_format", 400),
    ],
)
def test_bad_input_names_the_field(
    client: TestClient, body: dict[str, Any], param: str, status: int
) -> None:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"]


def test_input_longer_than_the_context(client: TestClient) -> None:
    response = client.post("/v1/embeddings", json={"model": "emb", "input": ["a", "word " * 100]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input" and error["code"] == "context_length_exceeded"
    assert "input 1 has 100 tokens" in error["message"]


def test_chat_to_an_embedding_model_is_refused(client: TestClient) -> None:
    body = {"model": "emb", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "model" and "serves embeddings, not chat" in error["message"]


def test_registry_validates_the_kind_of_request() -> None:
    models = registry()
    chat = ChatRequest(messages=(ChatMessage("user", "hi"),))
    embed = EmbedRequest(("hi",))
    models.validate("fake", chat)
    models.validate("emb", embed)
    for model, request in (("fake", embed), ("emb", chat)):
        with pytest.raises(InvalidRequest) as info:
            models.validate(model, request)
        assert info.value.param == "model"
    with pytest.raises(NotFound):
        models.validate("nope", embed)


def test_default_models_are_the_chat_model_then_the_embedding_model() -> None:
    specs = default_specs()
    assert list(specs) == [DEFAULT_MODEL, DEFAULT_EMBEDDING_MODEL]
    assert specs[DEFAULT_EMBEDDING_MODEL].options == {"embedding": True}
    assert specs[DEFAULT_EMBEDDING_MODEL].engine == "llamacpp"
    assert "embedding" not in specs[DEFAULT_MODEL].options


def test_models_file_embedding_option(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models.e]\nengine = "fake"\nembedding = true\n')
    assert ModelRegistry(load_specs(path)).get("e").embeds
    path.write_text('[models.e]\nengine = "fake"\nembedding = "yes"\n')
    with pytest.raises(ConfigError, match="embedding"):
        load_specs(path)
