"""OpenAI's Responses API through the official ``openai`` SDK, on the real model: plain,
streamed, in the background (polled, streamed and resumed, cancelled), continued with
``previous_response_id``, deleted, refused for another tenant and for bad input; and a
batch over ``/v1/responses`` with its usage.

Generations stay short (at most 16 tokens) except the one that is cancelled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import Response
from pydantic import BaseModel

from tests.integration.helpers import LONG_PROMPT, MODEL, new_key, wait_until
from tests.support.server import Server

pytestmark = pytest.mark.integration

ENDED = {"completed", "incomplete", "failed", "cancelled"}
ENDED_BATCH = {"completed", "failed", "expired", "cancelled"}


def ask(oai: openai.OpenAI, **extra: Any) -> Any:
    params: dict[str, Any] = {
        "model": MODEL,
        "input": "Say hello.",
        "max_output_tokens": 16,
        "temperature": 0,
    }
    return oai.responses.create(**{**params, **extra})


def wait_ended(oai: openai.OpenAI, rid: str) -> Response:
    def ended() -> Response | None:
        found = oai.responses.retrieve(rid)
        return found if found.status in ENDED else None

    return wait_until(ended, interval=0.1, what=f"response {rid} to end")


@pytest.fixture(scope="module")
def other(server: Server) -> Iterator[openai.OpenAI]:
    key = new_key(server, "mallory")
    with openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0) as client:
        yield client


def test_a_response(oai: openai.OpenAI) -> None:
    response = ask(oai, instructions="Answer in English.", metadata={"run": "it"})
    assert response.object == "response" and response.status in ("completed", "incomplete")
    assert response.output_text.strip() and response.model == MODEL
    assert response.metadata == {"run": "it"} and response.instructions == "Answer in English."
    assert response.usage is not None and 0 < response.usage.output_tokens <= 16
    usage = response.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    again = oai.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.status == response.status


def test_a_streamed_response(oai: openai.OpenAI) -> None:
    events = list(ask(oai, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and deltas == events[-1].response.output_text
    # the SDK's helper checks the events' order and ids, and wants response.completed
    with oai.responses.stream(
        model=MODEL, input="Reply with one word: hi.", max_output_tokens=64, temperature=0
    ) as stream:
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text.strip()


def test_a_background_response_polled_then_resumed_as_a_stream(oai: openai.OpenAI) -> None:
    created = ask(oai, background=True)
    assert created.status in ("queued", "in_progress") and created.background
    done = wait_ended(oai, created.id)
    assert done.status in ("completed", "incomplete") and done.output_text.strip()

    streamed = ask(oai, background=True, stream=True, input="Name a color.")
    head = []
    for event in streamed:
        head.append(event)
        if event.sequence_number == 4:
            break  # the connection drops
    streamed.close()
    assert head[0].type == "response.created" and head[1].type == "response.queued"
    rid = head[0].response.id
    rest = list(oai.responses.retrieve(rid, stream=True, starting_after=4))
    assert [e.sequence_number for e in rest] == list(range(5, 5 + len(rest)))
    assert rest[-1].type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in [*head, *rest] if e.type == "response.output_text.delta")
    assert text == rest[-1].response.output_text == wait_ended(oai, rid).output_text


def test_cancel_a_background_response(oai: openai.OpenAI) -> None:
    created = ask(oai, background=True, input=LONG_PROMPT, max_output_tokens=1500)
    wait_until(
        lambda: oai.responses.retrieve(created.id).status == "in_progress",
        what="the response to run",
    )
    cancelled = oai.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert oai.responses.retrieve(created.id).status == "cancelled"


def test_previous_response_id_and_input_items(oai: openai.OpenAI) -> None:
    first = ask(oai, input="My name is Ada. Say hello.")
    second = ask(oai, input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text.strip()
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    items = list(oai.responses.input_items.list(second.id, order="asc"))
    assert [item.role for item in items] == ["user", "assistant", "user"]
    assert items[1].content[0].text == first.output_text


def test_delete_and_another_tenant(oai: openai.OpenAI, other: openai.OpenAI) -> None:
    mine = ask(oai, background=True)
    for call in (
        lambda: other.responses.retrieve(mine.id),
        lambda: other.responses.cancel(mine.id),
        lambda: other.responses.delete(mine.id),
        lambda: other.responses.input_items.list(mine.id),
        lambda: other.responses.create(
            model=MODEL, input="x", previous_response_id=mine.id, max_output_tokens=4
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    wait_ended(oai, mine.id)
    oai.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(mine.id)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"input": [{"role": "wizard", "content": "x"}]}, "input.0.role"),
        ({"temperature": 5}, "temperature"),
        ({"background": True, "store": False}, "store"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input.0.content.0.type",
        ),
    ],
)
def test_bad_input_gets_a_400(other: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(other, **extra)
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == param, error
    assert error["type"] == "invalid_request_error"


def test_a_batch_over_responses_with_usage(oai: openai.OpenAI) -> None:
    lines = [
        {
            "custom_id": f"r-{n}",
            "method": "POST",
            "url": "/v1/responses",
            "body": {
                "model": MODEL,
                "input": f"Count to {n}.",
                "max_output_tokens": 8,
                "temperature": 0,
                "instructions": "Be brief.",
            },
        }
        for n in range(3)
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    uploaded = oai.files.create(file=("responses.jsonl", data), purpose="batch")
    batch = oai.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h"
    )
    assert batch.endpoint == "/v1/responses"

    done = wait_until(
        lambda: (b := oai.batches.retrieve(batch.id)).status in ENDED_BATCH and b,
        interval=0.2,
        what="the batch to end",
    )
    assert done.status == "completed", done
    assert done.request_counts is not None and done.request_counts.completed == 3
    assert done.output_file_id is not None
    output = [json.loads(x) for x in oai.files.content(done.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in output) == ["r-0", "r-1", "r-2"]
    inputs = outputs = 0
    for line in output:
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and body["object"] == "response"
        assert body["status"] in ("completed", "incomplete") and body["id"].startswith("resp_")
        assert Response.model_validate(body).output_text.strip()
        inputs += body["usage"]["input_tokens"]
        outputs += body["usage"]["output_tokens"]
    usage = done.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (inputs, outputs)
    assert usage.total_tokens == inputs + outputs
    assert usage.input_tokens_details.cached_tokens >= 0
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_a_bad_responses_batch_line_fails_validation(oai: openai.OpenAI) -> None:
    line = {
        "custom_id": "bad",
        "method": "POST",
        "url": "/v1/responses",
        "body": {"model": MODEL, "input": "x", "stream": True},
    }
    uploaded = oai.files.create(file=("bad.jsonl", json.dumps(line).encode()), purpose="batch")
    batch = oai.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h"
    )
    done = wait_until(
        lambda: (b := oai.batches.retrieve(batch.id)).status == "failed" and b,
        what="the batch to fail",
    )
    assert done.errors is not None and done.errors.data
    assert done.errors.data[0].param == "body.stream" and done.errors.data[0].line == 1


def test_a_batch_over_completions(oai: openai.OpenAI) -> None:
    lines = [
        {
            "custom_id": f"c-{n}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {
                "model": MODEL,
                "prompt": f"{n} plus {n} is",
                "max_tokens": 6,
                "temperature": 0,
                **({"logprobs": 2} if n == 0 else {}),
            },
        }
        for n in range(2)
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    uploaded = oai.files.create(file=("completions.jsonl", data), purpose="batch")
    batch = oai.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h"
    )
    done = wait_until(
        lambda: (b := oai.batches.retrieve(batch.id)).status in ENDED_BATCH and b,
        what="the batch to end",
    )
    assert done.status == "completed" and done.output_file_id is not None, done
    output = [json.loads(x) for x in oai.files.content(done.output_file_id).text.splitlines()]
    by_id = {line["custom_id"]: line["response"]["body"] for line in output}
    assert sorted(by_id) == ["c-0", "c-1"]
    for body in by_id.values():
        assert body["object"] == "text_completion" and body["choices"][0]["text"]
        assert 0 < body["usage"]["completion_tokens"] <= 6
    assert by_id["c-0"]["choices"][0]["logprobs"]["tokens"]
    assert by_id["c-1"]["choices"][0]["logprobs"] is None
    assert done.usage is not None
    assert done.usage.output_tokens == sum(b["usage"]["completion_tokens"] for b in by_id.values())


class Person(BaseModel):
    name: str
    age: int


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_structured_output_with_parse(oai: openai.OpenAI) -> None:
    parsed = oai.responses.parse(
        model=MODEL,
        input="Invent a person: a name and an age.",
        text_format=Person,
        max_output_tokens=60,
        temperature=0,
    )
    assert parsed.status == "completed"
    person = parsed.output_parsed
    assert isinstance(person, Person) and person.name
    json_object = ask(
        oai,
        input="Return a JSON object describing a cat with its name and color.",
        text={"format": {"type": "json_object"}},
        max_output_tokens=80,
    )
    assert json_object.status == "completed", json_object.output_text
    assert isinstance(json.loads(json_object.output_text), dict)


def test_a_forced_function_call(oai: openai.OpenAI) -> None:
    forced = {"type": "function", "name": "get_weather"}
    response = ask(
        oai, input="Weather in Oslo?", tools=[WEATHER], tool_choice=forced, max_output_tokens=60
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    answered = ask(
        oai,
        previous_response_id=response.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        tools=[WEATHER],
        tool_choice="none",
    )
    assert answered.output_text.strip()
    streamed = ask(
        oai,
        input="Weather in Rome?",
        tools=[WEATHER],
        tool_choice=forced,
        stream=True,
        max_output_tokens=60,
    )
    events = list(streamed)
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments)["city"]


def test_a_schema_the_engine_cannot_enforce_is_a_400(other: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        ask(other, text={"format": {"type": "json_schema", "name": "a", "schema": schema}})
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "text.format", error


def test_log_probabilities_of_the_output(oai: openai.OpenAI) -> None:
    response = ask(oai, include=["message.output_text.logprobs"], top_logprobs=2)
    assert response.top_logprobs == 2
    part = response.output[0].content[0]
    assert part.logprobs and "".join(t.token for t in part.logprobs) == response.output_text
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in part.logprobs)
    events = list(ask(oai, include=["message.output_text.logprobs"], stream=True))
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.logprobs and "".join(t.token for t in done.logprobs) == done.text
