"""OpenAI's Files and Batch APIs through the official ``openai`` SDK, on the real model.

Batches stay small (at most 10 rows of at most 8 tokens): the machine may have two cores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types import Batch

from tests.integration.helpers import MODEL, new_key, wait_until
from tests.support.server import Server

pytestmark = pytest.mark.integration

EMBED_MODEL = "smollm2-135m-embed"
ENDED = {"completed", "failed", "expired", "cancelled"}


def chat_line(custom_id: str, content: str = "Say hello.") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": MODEL,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 8,
            "temperature": 0,
        },
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines
    )


def start(oai: openai.OpenAI, lines: list[Any], endpoint: Any = "/v1/chat/completions") -> Batch:
    uploaded = oai.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    return oai.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h")


def wait_ended(oai: openai.OpenAI, batch_id: str) -> Batch:
    def ended() -> Batch | None:
        batch = oai.batches.retrieve(batch_id)
        return batch if batch.status in ENDED else None

    return wait_until(ended, interval=0.2, what=f"batch {batch_id} to end")


def read_lines(oai: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in oai.files.content(file_id).text.splitlines()]


@pytest.fixture
def other(server: Server) -> Iterator[openai.OpenAI]:
    """A client of another tenant."""
    key = new_key(server, "mallory")
    with openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0) as client:
        yield client


def test_a_chat_batch_with_output_and_error_files(oai: openai.OpenAI) -> None:
    too_long = " ".join(["word"] * 2100)  # more tokens than the model's context of 2048
    lines = [chat_line("hello-1"), chat_line("too-long", too_long), chat_line("hello-2")]
    uploaded = oai.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    assert uploaded.object == "file" and uploaded.purpose == "batch"
    assert uploaded.bytes == len(jsonl(lines)) and uploaded.filename == "requests.jsonl"
    assert oai.files.retrieve(uploaded.id).id == uploaded.id

    created = oai.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"purpose": "integration"},
    )
    assert created.status == "validating" and created.metadata == {"purpose": "integration"}
    assert created.input_file_id == uploaded.id and created.completion_window == "24h"

    done = wait_ended(oai, created.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (3, 2)
    assert done.request_counts.failed == 1
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.usage is not None and done.usage.output_tokens > 0
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens

    output = read_lines(oai, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == ["hello-1", "hello-2"]
    for line in output:
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == MODEL
        assert body["choices"][0]["message"]["content"].strip()
        assert 0 < body["usage"]["completion_tokens"] <= 8
    [error] = read_lines(oai, done.error_file_id)
    assert error["custom_id"] == "too-long"
    assert error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "context_length_exceeded"

    for file_id in (done.output_file_id, done.error_file_id):
        assert file_id is not None
        assert oai.files.retrieve(file_id).purpose == "batch_output"
    listed = {f.id for f in oai.files.list(purpose="batch_output")}
    assert {done.output_file_id, done.error_file_id} <= listed
    assert created.id in {b.id for b in oai.batches.list(limit=100)}
    assert oai.files.delete(uploaded.id).deleted


def test_a_file_that_does_not_validate(oai: openai.OpenAI) -> None:
    failed = wait_ended(oai, start(oai, [chat_line("a"), "not json", chat_line("a")]).id)
    assert failed.status == "failed" and failed.failed_at
    assert failed.errors is not None and failed.errors.data
    assert (failed.errors.data[0].line, failed.errors.data[0].code) == (2, "invalid_request")
    assert failed.output_file_id is None


def test_cancel_a_batch(oai: openai.OpenAI) -> None:
    created = start(oai, [chat_line(f"r{i}") for i in range(10)])
    cancelling = oai.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = wait_ended(oai, created.id)
    assert done.status == "cancelled" and done.cancelled_at
    counts = done.request_counts
    assert counts is not None and counts.completed + counts.failed == counts.total
    if counts.failed:
        errors = read_lines(oai, done.error_file_id)
        assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        oai.with_options(max_retries=0).batches.cancel(
            wait_ended(oai, start(oai, [chat_line("x")]).id).id
        )


def test_an_idempotency_key_makes_retries_safe(oai: openai.OpenAI) -> None:
    uploaded = oai.files.create(file=("one.jsonl", jsonl([chat_line("a")])), purpose="batch")
    headers = {"Idempotency-Key": f"retry-{uploaded.id}"}
    kwargs: dict[str, Any] = {
        "input_file_id": uploaded.id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "extra_headers": headers,
    }
    first = oai.batches.create(**kwargs)
    again = oai.batches.create(**kwargs)
    assert again.id == first.id
    assert wait_ended(oai, first.id).status == "completed"


def test_bad_requests_name_the_field(oai: openai.OpenAI) -> None:
    uploaded = oai.files.create(file=("one.jsonl", jsonl([chat_line("a")])), purpose="user_data")
    strict = oai.with_options(max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        strict.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/moderations",  # type: ignore[arg-type]
            completion_window="24h",
        )
    assert caught.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError) as caught:
        strict.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert caught.value.param == "input_file_id"
    with pytest.raises(openai.NotFoundError):
        strict.batches.retrieve("batch_does_not_exist")


def test_other_tenants_see_nothing(oai: openai.OpenAI, other: openai.OpenAI) -> None:
    uploaded = oai.files.create(file=("one.jsonl", jsonl([chat_line("a")])), purpose="batch")
    created = oai.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.cancel(created.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert created.id not in {b.id for b in other.batches.list()}
    assert wait_ended(oai, created.id).status == "completed"


def test_an_embeddings_batch(oai: openai.OpenAI) -> None:
    # the integration servers serve it (helpers.TEST_MODELS): a skip here would check nothing
    assert EMBED_MODEL in {m.id for m in oai.models.list()}
    texts = ["The cat sat on the mat.", "Interest rates rose again."]
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBED_MODEL, "input": text},
        }
        for i, text in enumerate(texts)
    ]
    done = wait_ended(oai, start(oai, lines, "/v1/embeddings").id)
    assert done.status == "completed" and done.endpoint == "/v1/embeddings"
    output = {
        line["custom_id"]: line["response"]["body"] for line in read_lines(oai, done.output_file_id)
    }
    assert set(output) == {"e0", "e1"}
    for body in output.values():
        assert body["object"] == "list" and body["model"] == EMBED_MODEL
        vector = body["data"][0]["embedding"]
        assert len(vector) > 100 and all(isinstance(x, float) for x in vector)
        assert body["usage"]["prompt_tokens"] > 0
