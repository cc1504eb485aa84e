"""A route that reads its own body (:mod:`inferq.api.body`) answers every request as the
same route with FastAPI's body parameter and key dependency does: the same status and
the same bytes, in Together's error shape and in Infera's (FastAPI's own 422 body),
including which check comes first (a malformed body before the key, the key before the
body's fields)."""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from inferq.api import guard
from inferq.api.app import create_app
from inferq.api.body import caller_and_body
from inferq.api.deps import CallerDep
from inferq.api.infera.schemas import JobRequest
from inferq.api.together.schemas import QueueJobRequest
from inferq.config import Settings
from inferq.core.keys import KeyService
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.store.memory import MemoryStore

#: (path prefix, model): Together's error shape, and Infera's (the paths no dialect claims)
ROUTES: dict[str, type[BaseModel]] = {"/v1/queue": QueueJobRequest, "": JobRequest}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = MemoryStore()
    registry = ModelRegistry(
        {"fake": ModelSpec(name="fake", engine="fake", context_length=128, slots=2)}
    )
    app = create_app(
        Settings(data_dir=tmp_path, max_body_bytes=4096), store=store, registry=registry
    )
    for prefix, model in ROUTES.items():
        _add_routes(app.router, prefix, model)
    with TestClient(app) as test_client:
        _, secret = asyncio.run(KeyService(store).create(name="a", tenant="ta"))
        test_client.headers["authorization"] = f"Bearer {secret}"
        yield test_client


def _add_routes(router: Any, prefix: str, model: type[BaseModel]) -> None:
    async def declared(body: Any, caller: Any) -> dict[str, Any]:
        return {"tenant": caller.tenant, "body": body.model_dump()}

    # the annotations FastAPI reads, as objects (this module's are strings)
    declared.__annotations__ = {"body": model, "caller": CallerDep, "return": dict[str, Any]}

    async def own(http: Request) -> dict[str, Any]:
        caller, body = await caller_and_body(http, model)
        return {"tenant": caller.tenant, "body": body.model_dump()}

    router.add_api_route(prefix + "/test-declared", declared, methods=["POST"])
    router.add_api_route(prefix + "/test-own", own, methods=["POST"])


GOOD = {
    "/v1/queue": {"model": "fake", "payload": {"messages": []}, "priority": 2, "extra": 1},
    "": {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_output": 4,
         "temperature": 0.5},
}  # fmt: skip


def _cases(prefix: str) -> list[tuple[str, bytes, list[tuple[str, str]]]]:
    good = json.dumps(GOOD[prefix]).encode()
    wrong = {**GOOD[prefix], "model": 3, "priority": "x", "messages": [{}], "temperature": 9}
    json_type = [("content-type", "application/json")]
    return [
        ("valid", good, json_type),
        ("valid, charset", good, [("content-type", "application/json; charset=utf-8")]),
        ("valid, +json", good, [("content-type", "application/vnd.inferq+json")]),
        ("text/x+json", good, [("content-type", "text/x+json")]),
        ("text/plain", good, [("content-type", "text/plain")]),
        ("no content type", good, []),
        ("two content types", good, [("content-type", "text/plain"), *json_type]),
        ("missing field", json.dumps({"model": "fake"}).encode(), json_type),
        ("wrong types", json.dumps(wrong).encode(), json_type),
        ("array", b"[1, 2]", json_type),
        ("string", b'"hi"', json_type),
        ("empty", b"", json_type),
        ("blank", b"  \n", json_type),
        ("malformed", b'{"model": ', json_type),
        ("utf-8 bom", codecs.BOM_UTF8 + good, json_type),
        ("utf-16", good.decode().encode("utf-16"), json_type),
        ("not text", b"\xff\xfe\xfd{", json_type),
        ("too large", b"{" + b" " * 5000 + b"}", json_type),
        ("too large, text/plain", b" " * 5000, [("content-type", "text/plain")]),
    ]


def _answer(client: TestClient, path: str, body: bytes, headers: list[tuple[str, str]]) -> Any:
    response = client.post(path, content=body, headers=headers)
    return response.status_code, response.content, response.headers.get("content-type")


@pytest.mark.parametrize("prefix", list(ROUTES), ids=["together", "infera"])
def test_every_body_gets_the_answer_fastapi_gave(client: TestClient, prefix: str) -> None:
    for name, body, headers in _cases(prefix):
        declared = _answer(client, prefix + "/test-declared", body, headers)
        own = _answer(client, prefix + "/test-own", body, headers)
        assert own == declared, name
    # the cases reach more than one outcome: accepted, and refused in more than one way
    answers = {_answer(client, prefix + "/test-own", b, h) for _, b, h in _cases(prefix)}
    assert 200 in {status for status, _, _ in answers} and len(answers) > 5


@pytest.mark.parametrize("prefix", list(ROUTES), ids=["together", "infera"])
def test_a_body_whose_parsed_value_is_not_kept_gets_the_same_answer(
    client: TestClient, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the guard keeps the parsed value of small bodies only; a larger one is parsed again
    monkeypatch.setattr(guard, "KEEP_PARSED", 10)
    for name, body, headers in _cases(prefix):
        declared = _answer(client, prefix + "/test-declared", body, headers)
        own = _answer(client, prefix + "/test-own", body, headers)
        assert own == declared, name


def test_the_guard_keeps_the_parsed_value_of_small_bodies_only(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def kept(http: Request) -> dict[str, Any]:
        data, parsed = http.scope[guard.BODY]
        return {"bytes": len(data), "parsed": parsed is not guard.NOT_PARSED}

    app: Any = client.app
    app.router.add_api_route("/v1/queue/test-kept", kept, methods=["POST"])
    monkeypatch.setattr(guard, "KEEP_PARSED", 1000)  # under the test server's body limit
    small = json.dumps({"text": "x" * 100}).encode()
    large = json.dumps({"text": "x" * 1000}).encode()
    for body, parsed in ((small, True), (large, False), (b"[1, ", False)):
        headers = {"content-type": "application/json"}
        answer = client.post("/v1/queue/test-kept", content=body, headers=headers)
        assert answer.json() == {"bytes": len(body), "parsed": parsed}


@pytest.mark.parametrize("prefix", list(ROUTES), ids=["together", "infera"])
def test_the_checks_come_in_fastapis_order(client: TestClient, prefix: str) -> None:
    bodies = (json.dumps(GOOD[prefix]).encode(), json.dumps({"model": ""}).encode(), b'{"a": ', b"")
    key = client.headers.pop("authorization")
    try:
        for auth in (None, "Bearer nope", key):
            headers = [("content-type", "application/json")]
            headers += [("authorization", auth)] if auth else []
            for body in bodies:
                declared = _answer(client, prefix + "/test-declared", body, headers)
                own = _answer(client, prefix + "/test-own", body, headers)
                assert own == declared, (auth, body)
    finally:
        client.headers["authorization"] = key


def test_the_openapi_document_shows_the_bodies_these_routes_read(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    for path, model in (("/v1/queue/submit", QueueJobRequest), ("/submit_job", JobRequest)):
        body = document["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        schema = body["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == set(model.model_fields), path
        assert set(schema["required"]) == {
            name for name, field in model.model_fields.items() if field.is_required()
        }
    # every reference in the document (the models nested in those bodies included) resolves
    for ref in _refs(document):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)
