"""Anthropic's ``count_tokens`` and Message Batches in-process, through the official
``anthropic`` SDK (memory store and blobs, fake engines; the worker and the batch runner
run in the app's lifespan).

tests/integration/test_anthropic_batches.py runs them against a real server and model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types.messages import MessageBatch
from fastapi.testclient import TestClient

from inferq.api.app import create_app
from inferq.blobs import MemoryBlobs
from inferq.config import Settings
from inferq.core.keys import KeyService
from inferq.engines.base import ModelSpec
from inferq.engines.fake import FAIL_TRIGGER
from inferq.engines.registry import ModelRegistry
from inferq.store.memory import MemoryStore


def registry() -> ModelRegistry:
    return ModelRegistry(
        {
            "fake": ModelSpec(name="fake", engine="fake", context_length=128, slots=2),
            # one word every 50 ms: a row of 20 words runs for a second
            "slow": ModelSpec(
                name="slow",
                engine="fake",
                context_length=128,
                slots=2,
                options={"token_delay": 0.05},
            ),
            "emb": ModelSpec(
                name="emb",
                engine="fake",
                context_length=64,
                slots=1,
                options={"embedding": True},
            ),
        }
    )


class App:
    def __init__(self, client: TestClient) -> None:
        self.http = client

    def claude(self, tenant: str = "ta") -> anthropic.Anthropic:
        store = self.http.app.state.runtime.store  # type: ignore[attr-defined]
        _, secret = asyncio.run(KeyService(store).create(name=f"k-{time.time_ns()}", tenant=tenant))
        return anthropic.Anthropic(
            api_key=secret, base_url=str(self.http.base_url), http_client=self.http, max_retries=0
        )


@contextlib.contextmanager
def make_app(tmp_path: Path, **settings: Any) -> Iterator[App]:
    app = create_app(
        Settings(data_dir=tmp_path, **settings),
        store=MemoryStore(),
        registry=registry(),
        blobs=MemoryBlobs(),
    )
    with TestClient(app) as client:
        yield App(client)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with make_app(tmp_path) as made:
        yield made


@pytest.fixture
def claude(app: App) -> anthropic.Anthropic:
    return app.claude()


def request(custom_id: str, text: str = "hello there", **params: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": "fake",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": text}],
            **params,
        },
    }


def wait_ended(claude: anthropic.Anthropic, batch_id: str, timeout: float = 30) -> MessageBatch:
    deadline = time.monotonic() + timeout
    while True:
        batch = claude.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"still {batch.processing_status}: {batch}"
        time.sleep(0.05)


def results(claude: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    lines = list(claude.messages.batches.results(batch_id))
    seen = Counter(line.custom_id for line in lines)
    assert max(seen.values()) == 1, f"a request answered twice: {seen.most_common(2)}"
    return {line.custom_id: line.result for line in lines}


# -- count_tokens -------------------------------------------------------------------


def test_count_tokens_uses_the_models_count(claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(
        model="fake",
        system="Be brief.",
        messages=[{"role": "user", "content": "one two three"}],
    )
    # the fake engine's prompt tokens: each message's words, and one per message
    assert counted.input_tokens == (2 + 1) + (3 + 1)
    message = claude.messages.create(
        model="fake",
        max_tokens=4,
        system="Be brief.",
        messages=[{"role": "user", "content": "one two three"}],
    )
    assert message.usage.input_tokens == counted.input_tokens


def test_count_tokens_refuses_what_it_cannot_count(claude: anthropic.Anthropic) -> None:
    hello: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.NotFoundError) as unknown:
        claude.messages.count_tokens(model="nope", messages=hello)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError, match="serves embeddings"):
        claude.messages.count_tokens(model="emb", messages=hello)
    with pytest.raises(anthropic.BadRequestError) as empty:
        claude.messages.count_tokens(model="fake", messages=[])
    assert empty.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "messages: List should have at least 1 item after validation, not 0",
        },
    }


# -- message batches ------------------------------------------------------------------


def test_a_batch_through_to_its_results(claude: anthropic.Anthropic) -> None:
    created = claude.messages.batches.create(
        requests=[
            request("a", "hello there"),
            request("b", FAIL_TRIGGER),
            request("c", "one two three four five", max_tokens=2),
        ]
    )
    assert created.type == "message_batch"
    assert created.id.startswith("msgbatch_")
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 3
    assert created.results_url is None and created.ended_at is None
    assert created.expires_at > created.created_at
    ended = wait_ended(claude, created.id)
    assert ended.request_counts.model_dump() == {
        "processing": 0,
        "succeeded": 2,
        "errored": 1,
        "canceled": 0,
        "expired": 0,
    }
    assert ended.ended_at is not None and ended.cancel_initiated_at is None
    assert ended.results_url == f"http://testserver/v1/messages/batches/{created.id}/results"
    got = results(claude, created.id)
    assert set(got) == {"a", "b", "c"}
    assert got["a"].type == "succeeded"
    message = got["a"].message
    assert message.content[0].text == "echo: hello there"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.model == "fake"
    assert got["c"].type == "succeeded" and got["c"].message.stop_reason == "max_tokens"
    assert got["b"].type == "errored"
    assert got["b"].error.type == "error"
    assert got["b"].error.error.type == "api_error"


def test_bad_requests_are_refused_naming_the_request(app: App) -> None:
    http = app.http
    http.headers["x-api-key"] = app.claude().api_key

    def refused(body: Any, status: int = 400) -> str:
        response = http.post("/v1/messages/batches", json=body)
        assert response.status_code == status, response.text
        error = response.json()
        assert set(error) == {"type", "error"} and error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        message: str = error["error"]["message"]
        return message

    missing = request("b")
    del missing["params"]["max_tokens"]
    assert refused({"requests": [request("a"), missing]}) == (
        "requests.1.params.max_tokens: Field required"
    )
    assert "requests.1.custom_id" in refused({"requests": [request("a"), request("a")]})
    assert refused({"requests": [request("a b")]}).startswith("requests.0.custom_id: String")
    assert refused({"requests": []}).startswith("requests: List should have at least 1")
    assert refused({"requests": [request("a", model="nope")]}).startswith(
        "requests.0.params.model: the model 'nope' does not exist"
    )
    assert refused({"requests": [request("a", stream=True)]}) == (
        "requests.0.params.stream: streaming is not available in a message batch"
    )
    tool_use = request("a")
    tool_use["params"]["messages"] = [
        {"role": "user", "content": [{"type": "image", "source": {}}]}
    ]
    assert refused({"requests": [tool_use]}).startswith("requests.0.params.messages.0.content.0")
    too_many = [{"custom_id": f"r{i}", "params": {}} for i in range(100_001)]
    assert refused({"requests": too_many}).startswith("requests: List should have at most 100000")
    # Anthropic's 256 MB, declared up front, is a 413 before a byte is read
    response = http.post(
        "/v1/messages/batches",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": str(256_000_001)},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "request_too_large"
    # nothing was created
    assert http.get("/v1/messages/batches").json()["data"] == []


def test_cancel_ends_the_batch_with_every_request_answered(claude: anthropic.Anthropic) -> None:
    words = " ".join(f"w{i}" for i in range(20))
    created = claude.messages.batches.create(
        requests=[request(f"r{i}", words, model="slow", max_tokens=30) for i in range(6)]
    )
    cancelled = claude.messages.batches.cancel(created.id)
    assert cancelled.processing_status in ("canceling", "ended")
    assert cancelled.cancel_initiated_at is not None
    ended = wait_ended(claude, created.id)
    counts = ended.request_counts
    assert counts.canceled >= 4, counts  # two slots: at most two rows ran
    assert counts.succeeded + counts.canceled == 6 and counts.errored == 0
    got = results(claude, created.id)
    assert set(got) == {f"r{i}" for i in range(6)}
    assert Counter(r.type for r in got.values()) == {
        "canceled": counts.canceled,
        **({"succeeded": counts.succeeded} if counts.succeeded else {}),
    }
    # cancelling it again is harmless
    assert claude.messages.batches.cancel(created.id).processing_status == "ended"


def test_a_batch_cancelled_before_its_requests_were_read(app: App) -> None:
    claude = app.claude()
    # the slow model (two words, 0.1 s a row, two slots): the batch cannot end before the
    # cancel arrives, as 3,000 rows of the fast one sometimes did
    created = claude.messages.batches.create(
        requests=[request(f"r{i}", model="slow") for i in range(3000)]
    )
    claude.messages.batches.cancel(created.id)
    ended = wait_ended(claude, created.id, timeout=60)
    got = results(claude, created.id)
    assert set(got) == {f"r{i}" for i in range(3000)}, "every request has its one result"
    counts = ended.request_counts
    assert counts.succeeded + counts.canceled == 3000
    assert Counter(r.type for r in got.values())["canceled"] == counts.canceled


def test_list_pages_newest_first_both_ways(claude: anthropic.Anthropic) -> None:
    ids = [claude.messages.batches.create(requests=[request("a")]).id for _ in range(5)]
    newest_first = ids[::-1]
    first = claude.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == newest_first[:2]
    assert first.has_more and first.first_id == ids[4] and first.last_id == ids[3]
    assert [b.id for b in claude.messages.batches.list(limit=2)] == newest_first  # auto-paging
    before = claude.messages.batches.list(before_id=ids[0], limit=2)
    assert [b.id for b in before.data] == [ids[2], ids[1]]
    assert before.has_more
    # the SDK pages towards the newest: each page is newest first
    assert [b.id for b in claude.messages.batches.list(before_id=ids[0], limit=2)] == [
        ids[2],
        ids[1],
        ids[4],
        ids[3],
    ]
    last = claude.messages.batches.list(after_id=ids[1], limit=2)
    assert [b.id for b in last.data] == [ids[0]] and not last.has_more


def test_delete_only_an_ended_batch(claude: anthropic.Anthropic) -> None:
    words = " ".join(f"w{i}" for i in range(20))
    running = claude.messages.batches.create(
        requests=[request("a", words, model="slow", max_tokens=30)]
    )
    with pytest.raises(anthropic.BadRequestError, match="still being processed"):
        claude.messages.batches.delete(running.id)
    with pytest.raises(anthropic.BadRequestError, match="has not ended"):
        claude.get(f"/v1/messages/batches/{running.id}/results", cast_to=object)
    wait_ended(claude, running.id)
    with pytest.raises(anthropic.APIStatusError, match="already ended") as late:
        claude.messages.batches.cancel(running.id)
    assert late.value.status_code == 409
    deleted = claude.messages.batches.delete(running.id)
    assert (deleted.id, deleted.type) == (running.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.batches.retrieve(running.id)


def test_another_tenants_batch_is_not_found(app: App) -> None:
    mine, theirs = app.claude("ta"), app.claude("tb")
    batch = mine.messages.batches.create(requests=[request("a")])
    wait_ended(mine, batch.id)
    for call in (
        lambda: theirs.messages.batches.retrieve(batch.id),
        lambda: theirs.messages.batches.cancel(batch.id),
        lambda: theirs.messages.batches.delete(batch.id),
        lambda: theirs.get(f"/v1/messages/batches/{batch.id}/results", cast_to=object),
    ):
        with pytest.raises(anthropic.NotFoundError) as raised:
            call()
        assert raised.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert theirs.messages.batches.list().data == []
    assert [b.id for b in mine.messages.batches.list()] == [batch.id]


def test_an_openai_batch_is_not_a_message_batch(app: App) -> None:
    claude = app.claude()
    http = app.http
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}
    line["body"] = request("a")["params"]
    uploaded = http.post(
        "/v1/files",
        files={"file": ("in.jsonl", json.dumps(line).encode() + b"\n")},
        data={"purpose": "batch"},
        headers={"x-api-key": claude.api_key},
    )
    assert uploaded.status_code == 200, uploaded.text
    openai_batch = http.post(
        "/v1/batches",
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
        headers={"x-api-key": claude.api_key},
    ).json()
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.batches.retrieve(openai_batch["id"])
    message_batch = claude.messages.batches.create(requests=[request("a")])
    assert (
        http.get(
            f"/v1/batches/{message_batch.id}", headers={"x-api-key": claude.api_key}
        ).status_code
        == 404
    )
    wait_ended(claude, message_batch.id)
    files = http.get("/v1/files", headers={"x-api-key": claude.api_key}).json()["data"]
    assert {f["purpose"] for f in files} <= {"batch", "batch_output"}, (
        "a message batch's files are not OpenAI files"
    )


def test_the_results_url_starts_with_the_public_url(tmp_path: Path) -> None:
    with make_app(tmp_path, public_url="https://inferq.example.com/") as behind_a_proxy:
        claude = behind_a_proxy.claude()
        batch = claude.messages.batches.create(requests=[request("a")])
        ended = wait_ended(claude, batch.id)
    assert ended.results_url == (
        f"https://inferq.example.com/v1/messages/batches/{batch.id}/results"
    )
