"""OpenAI's chat and models API through the official ``openai`` SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
import together

from tests.integration.helpers import (
    LONG_PROMPT,
    MODEL,
    chat_payload,
    drain,
    jobs_of,
    metrics,
    status,
    submit,
    wait_until,
)
from tests.support.server import Server

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(autouse=True)
def _idle(tq: together.Together) -> Iterator[None]:
    yield
    drain(tq)


def test_chat_completion(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16)

    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.id.startswith("chatcmpl-")
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_max_tokens_cuts_the_completion(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": LONG_PROMPT}],
        max_tokens=5,
        temperature=0,
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens <= 5


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_chunks_make_up_the_completion(
    oai: openai.OpenAI, tq: together.Together, include_usage: bool
) -> None:
    options = {"include_usage": True} if include_usage else openai.omit
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me about the moon."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options=options,
    )
    with stream:
        chunks = list(stream)

    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1, "the text came in one piece, not streamed"
    text = "".join(pieces)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes in (["stop"], ["length"])

    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert usage_chunks == [chunks[-1]]
        assert chunks[-1].choices == []
        usage = chunks[-1].usage
        assert usage.prompt_tokens > 0
        assert 0 < usage.completion_tokens <= 24
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    else:
        assert usage_chunks == []

    # The streamed text is exactly what the job produced.
    job = status(tq, chunks[0].id.removeprefix("chatcmpl-"))
    assert job.status == "done"
    assert job.outputs["choices"][0]["message"]["content"] == text


def test_priority_in_extra_body_is_kept(oai: openai.OpenAI, tq: together.Together) -> None:
    completion = oai.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=4, extra_body={"priority": 7}
    )
    assert completion.choices[0].message.content is not None
    assert status(tq, completion.id.removeprefix("chatcmpl-")).priority == 7


def test_tiny_timeout_is_a_408_and_stops_the_job(
    server: Server, api_key: str, tq: together.Together
) -> None:
    sent: list[str] = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [lambda r: sent.append(r.url.path)]})
    before = metrics(tq).total_jobs
    expired_before = len(jobs_of(server, "alice", "expired"))

    client = openai.OpenAI(api_key=api_key, base_url=server.url + "/v1", http_client=http)
    with client, pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": LONG_PROMPT}],
            max_tokens=500,
            extra_body={"timeout": 0.05},
        )

    error = raised.value
    assert error.status_code == 408
    assert error.type == "timeout_error"
    assert error.code == "timeout"
    assert isinstance(error.message, str) and "deadline" in error.message
    # no retry: one request, one job
    assert sent == ["/v1/chat/completions"]
    assert metrics(tq).total_jobs == before + 1
    # the job was stopped, not left generating
    wait_until(lambda: metrics(tq).messages_running == 0, timeout=5, what="the job to stop")
    assert len(jobs_of(server, "alice", "expired")) == expired_before + 1


def test_models_list_has_the_default_model(oai: openai.OpenAI) -> None:
    models = list(oai.models.list())
    assert MODEL in [m.id for m in models]
    for model in models:
        assert model.object == "model"
        assert isinstance(model.owned_by, str)
        assert isinstance(model.created, int)
    assert oai.models.retrieve(MODEL).id == MODEL


def test_sync_chat_is_answered_while_the_queue_is_full(
    oai: openai.OpenAI, tq: together.Together
) -> None:
    queued = [submit(tq, chat_payload(LONG_PROMPT, max_tokens=64)) for _ in range(20)]
    wait_until(lambda: metrics(tq).messages_running > 0, what="the queue to start")
    load = metrics(tq)
    # the test server runs the model with one slot: the queue fills it
    assert load.messages_running == 1
    assert load.messages_waiting >= 15

    started = time.monotonic()
    completion = oai.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    elapsed = time.monotonic() - started
    backlog = metrics(tq)

    assert completion.choices[0].message.content
    # the queue is far from drained: the sync request did not wait behind it
    assert backlog.messages_waiting >= 10, (backlog, elapsed)
    cleared = tq.beta.jig.queue.clear(model=MODEL).canceled_count
    assert cleared >= 10
    assert sum(status(tq, i).status == "canceled" for i in queued) == cleared
