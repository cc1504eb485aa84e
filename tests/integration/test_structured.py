"""Structured output, tool calls, log probabilities and legacy completions through
the official ``openai`` SDK, on the real SmolLM2 model.

Every constrained answer is checked the way a client would: parsed as JSON and
validated against its schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.integration.helpers import MODEL, new_key, start_server, wait_until
from tests.support.server import Server

pytestmark = pytest.mark.integration

#: a server of its own, with slots enough to run a batch's rows side by side
MODELS = f"""\
[models."{MODEL}"]
engine = "llamacpp"
slots = 8
context_length = 1024
"""

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
VERDICT = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["yes", "no"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 10},
    },
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}


class Person(BaseModel):
    # bounded, so that every sampled answer ends well before max_tokens
    name: str = Field(max_length=30)
    age: int = Field(ge=0, le=150)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("structured"), models=MODELS)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def oai(server: Server) -> Iterator[openai.OpenAI]:
    key = new_key(server, "structured")
    with openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0) as client:
        yield client


def test_parse_returns_a_pydantic_object(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a person: a name and an age."}],
        response_format=Person,
        max_tokens=60,
        temperature=0,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Person)
    assert parsed.name
    assert completion.choices[0].finish_reason == "stop"


def test_beta_parse_samples_valid_objects(oai: openai.OpenAI) -> None:
    for seed in range(3):
        completion = oai.beta.chat.completions.parse(
            model=MODEL,
            messages=[{"role": "user", "content": "Invent a person."}],
            response_format=Person,
            max_tokens=60,
            temperature=1.0,
            seed=seed,
        )
        assert isinstance(completion.choices[0].message.parsed, Person)


def test_json_object_output_parses(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": "Return a JSON object describing a cat with its name and color.",
            }
        ],
        response_format={"type": "json_object"},
        max_tokens=80,
        temperature=0,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(json.loads(choice.message.content or ""), dict)


def test_json_schema_output_validates(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Is the sky blue?"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "verdict", "schema": VERDICT, "strict": True},
        },
        max_tokens=40,
        temperature=0.7,
        n=3,
        seed=1,
    )
    assert len(completion.choices) == 3
    for choice in completion.choices:
        jsonschema.validate(json.loads(choice.message.content or ""), VERDICT)


def test_a_named_tool_call_matches_its_schema(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        temperature=0,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_required_tool_call_streams_in_deltas(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=60,
        temperature=0,
        stream=True,
    )
    name, arguments, pieces, finish, ids = "", "", 0, None, set()
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            assert call.index == 0
            if call.id:
                ids.add(call.id)
            if call.function and call.function.name:
                name += call.function.name
            if call.function and call.function.arguments:
                arguments += call.function.arguments
                pieces += 1
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert name == "get_weather" and len(ids) == 1
    assert pieces > 1  # the arguments arrived in pieces, as they were generated
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])


def test_a_conversation_with_tool_results(oai: openai.OpenAI) -> None:
    """Assistant calls and tool answers are accepted as input; ``none`` answers in text."""
    messages: list[Any] = [
        *ASK_WEATHER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "unit": "celsius"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees, sunny"},
    ]
    completion = oai.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=20
    )
    choice = completion.choices[0]
    assert choice.message.tool_calls is None
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")


def test_auto_answers_in_text_or_a_valid_call(oai: openai.OpenAI) -> None:
    for content in ("Say hello.", "What is the weather in Rome, in celsius?"):
        completion = oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": content}],
            tools=[WEATHER],
            max_tokens=40,
            temperature=0,
        )
        message = completion.choices[0].message
        if message.tool_calls:
            assert completion.choices[0].finish_reason == "tool_calls"
            arguments = json.loads(message.tool_calls[0].function.arguments)
            jsonschema.validate(arguments, WEATHER["function"]["parameters"])
        else:
            assert message.content and not message.content.startswith('{"name"')


def test_logprobs_and_several_choices(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=6,
        temperature=0.8,
        seed=7,
        n=2,
        logprobs=True,
        top_logprobs=3,
    )
    assert [c.index for c in completion.choices] == [0, 1]
    for choice in completion.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        tokens = choice.logprobs.content
        # a token may hold part of a character (cut off at the end): its bytes add up
        text = bytes(b for t in tokens for b in t.bytes or ()).decode(errors="ignore")
        assert text == choice.message.content
        for token in tokens:
            assert token.logprob <= 0
            assert len(token.top_logprobs) == 3
            assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == sum(len(c.logprobs.content) for c in completion.choices)


def test_completions(oai: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    plain = oai.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0)
    assert plain.object == "text_completion"
    assert plain.choices[0].text and plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage is not None and 0 < plain.usage.completion_tokens <= 6

    echoed = oai.completions.create(
        model=MODEL, prompt=[prompt, "One, two,"], max_tokens=6, temperature=0, echo=True
    )
    assert [c.index for c in echoed.choices] == [0, 1]
    assert echoed.choices[0].text == prompt + plain.choices[0].text
    assert echoed.choices[1].text.startswith("One, two,")

    scored = oai.completions.create(
        model=MODEL, prompt=prompt, max_tokens=4, temperature=0, logprobs=2
    )
    logprobs = scored.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.top_logprobs
    assert "".join(logprobs.tokens) == scored.choices[0].text
    assert all(len(top) == 2 for top in logprobs.top_logprobs)

    streamed = oai.completions.create(
        model=MODEL, prompt=prompt, max_tokens=6, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].text for chunk in streamed if chunk.choices)
    assert text == plain.choices[0].text


@pytest.mark.parametrize(
    ("kwargs", "param", "words"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "strin"}},
                }
            },
            "response_format",
            "strin",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}},
                }
            },
            "response_format",
            "uniqueItems",
        ),
        ({"response_format": {"type": "xml"}}, "response_format", "type"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", "sometimes"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "f"}}},
            "tool_choice",
            "'f'",
        ),
        ({"tool_choice": "required"}, "tool_choice", "tools"),
        ({"top_logprobs": 2}, "top_logprobs", "logprobs"),
        ({"n": 2, "stream": True}, "n", "stream"),
    ],
)
def test_bad_input_is_a_400_naming_it(
    oai: openai.OpenAI, kwargs: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model=MODEL, messages=ASK_WEATHER, max_tokens=4, **kwargs)
    error = caught.value
    assert error.status_code == 400
    body: Any = error.body
    assert body["type"] == "invalid_request_error"
    assert (body["param"] or "").startswith(param)
    assert words in body["message"]


def test_bad_completions_are_a_400(oai: openai.OpenAI) -> None:
    for kwargs, param in (
        ({"suffix": "!"}, "suffix"),
        ({"echo": True, "logprobs": 1}, "logprobs"),
        ({"prompt": [[1, 2, 3]]}, "prompt"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            oai.completions.create(**{"model": MODEL, "prompt": "Hi", "max_tokens": 2, **kwargs})
        assert (caught.value.body or {}).get("param") == param


def _schema_line(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"row-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Is {i} an even number?"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": VERDICT, "strict": True},
            },
            "max_tokens": 40,
            "temperature": 0.7,
            "seed": i,
        },
    }


@pytest.mark.slow
def test_every_row_of_a_batch_matches_its_schema(oai: openai.OpenAI) -> None:
    rows = 100
    data = b"".join(json.dumps(_schema_line(i)).encode() + b"\n" for i in range(rows))
    uploaded = oai.files.create(file=("rows.jsonl", data), purpose="batch")
    batch = oai.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    def ended() -> Any:
        got = oai.batches.retrieve(batch.id)
        return got if got.status in ("completed", "failed", "expired", "cancelled") else None

    done = wait_until(ended, timeout=600, interval=1.0, what="the batch to end")
    assert done.status == "completed", done.errors
    assert done.request_counts is not None and done.request_counts.completed == rows
    assert done.output_file_id is not None
    lines = [json.loads(x) for x in oai.files.content(done.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(f"row-{i}" for i in range(rows))
    for line in lines:
        choice = line["response"]["body"]["choices"][0]
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(json.loads(choice["message"]["content"]), VERDICT)
