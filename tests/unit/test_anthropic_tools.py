"""Anthropic's tool use onto core's: ``tools``, ``tool_choice``, ``tool_use`` and
``tool_result`` blocks in, ``tool_use`` blocks and ``stop_reason: tool_use`` out (the
shapes checked against the ``anthropic`` SDK's own types)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from inferq.api.anthropic.schemas import MessagesRequest
from inferq.api.anthropic.translate import render_message, whole_blocks
from inferq.core.errors import InvalidRequest
from inferq.core.models import Job
from inferq.core.states import JobState, ServiceClass
from inferq.core.structured import Tool, ToolCall, ToolChoice
from inferq.core.work import ChatMessage, ChatResult, Usage
from tests.unit.test_anthropic import client  # noqa: F401  (the fixture)

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "fake",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER],
        **extra,
    }


def test_tools_and_the_choice_become_cores() -> None:
    request = MessagesRequest.model_validate(body()).to_request()
    assert request.tools == (
        Tool("get_weather", "The weather in a city.", WEATHER["input_schema"]),  # type: ignore[arg-type]
    )
    assert request.tool_choice == ToolChoice("auto")
    for raw, choice in [
        ({"type": "any"}, ToolChoice("required")),
        ({"type": "tool", "name": "get_weather"}, ToolChoice("function", "get_weather")),
        ({"type": "none"}, ToolChoice("none")),
        ({"type": "auto", "disable_parallel_tool_use": True}, ToolChoice("auto")),
    ]:
        got = MessagesRequest.model_validate(body(tool_choice=raw)).to_request()
        assert got.tool_choice == choice
    no_tools = MessagesRequest.model_validate({**body(), "tools": None}).to_request()
    assert (no_tools.tools, no_tools.tool_choice) == ((), ToolChoice("none"))


def test_a_tool_conversation_becomes_calls_and_tool_messages() -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 C"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "no forecast"}],
                    "is_error": True,
                }
            ],
        },
    ]
    request = MessagesRequest.model_validate(body(messages=messages)).to_request()
    assert request.messages == (
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage(
            "assistant",
            "Let me look.",
            tool_calls=(ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),),
        ),
        ChatMessage("tool", "Sunny, 21 C", tool_call_id="toolu_1"),
        ChatMessage("user", "And tomorrow?"),
        ChatMessage("assistant", "", tool_calls=(ToolCall("toolu_2", "get_weather", "{}"),)),
        ChatMessage("tool", "Error: no forecast", tool_call_id="toolu_2"),
    )


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools.0.type: 'bash_20250124'"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
        ({"tools": [WEATHER, WEATHER]}, "a name of its own"),
        ({"tool_choice": {"type": "tool", "name": "nope"}}, "'nope' is not among the tools"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}
                ]
            },
            "messages.0.content.0: content blocks of type 'tool_use' are not supported in a "
            "message of the user",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}
                ]
            },
            "'tool_result' are not supported in a message of the assistant",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
            "messages.0.content.0.tool_use_id",
        ),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(extra: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidRequest, match=words.replace("(", r"\(").replace(".", r"\.")):
        MessagesRequest.model_validate(body(**extra)).to_request()


def _job(result: ChatResult) -> Job:
    return Job(
        id="j1",
        tenant="t",
        model="m",
        origin="anthropic",
        service_class=ServiceClass.INTERACTIVE,
        priority=0,
        state=JobState.SUCCEEDED,
        request=MessagesRequest.model_validate(body()).to_request(),
        created_at=0.0,
        result=result,
        usage=result.usage,
    )


CALL = ToolCall("", "get_weather", '{"city": "Paris"}')


def test_an_answer_that_calls_a_tool() -> None:
    answer = ChatResult(
        "", "tool_calls", Usage(prompt_tokens=9, completion_tokens=7), tool_calls=(CALL,)
    )
    message = render_message(_job(answer))
    assert message["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "tool_use", "id": "toolu_j1_0", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    parsed = anthropic.types.Message.model_validate(message)
    block = parsed.content[0]
    assert isinstance(block, anthropic.types.ToolUseBlock) and block.input == {"city": "Paris"}
    said = render_message(_job(ChatResult("Checking.", "tool_calls", Usage(), tool_calls=(CALL,))))
    assert [b["type"] for b in said["content"]] == ["text", "tool_use"]


def test_a_held_answer_streams_block_by_block() -> None:
    answer = ChatResult("Checking.", "tool_calls", Usage(), tool_calls=(CALL,))
    events = whole_blocks(_job(answer))
    adapter: TypeAdapter[Any] = TypeAdapter(anthropic.types.RawMessageStreamEvent)
    parsed = [adapter.validate_python(event) for event in events]
    assert [(e.type, getattr(e, "index", None)) for e in parsed] == [
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
    ]
    assert events[3]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_j1_0",
        "name": "get_weather",
        "input": {},
    }
    assert json.loads(events[4]["delta"]["partial_json"]) == {"city": "Paris"}


def test_tools_through_the_sdk(client: TestClient) -> None:  # noqa: F811
    claude = anthropic.Anthropic(
        api_key=client.headers["x-api-key"],
        base_url=str(client.base_url),
        http_client=client,
        max_retries=0,
    )
    hello: list[anthropic.types.MessageParam] = [{"role": "user", "content": "one two"}]
    # the fake engine answers in text; a stream that may call a tool is sent whole at the end
    with claude.messages.stream(
        model="fake",
        max_tokens=8,
        messages=hello,
        tools=[WEATHER],  # type: ignore[list-item]
    ) as stream:
        kinds = [event.type for event in stream if event.type != "text"]
        final = stream.get_final_message()
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert final.content[0].text == "echo: one two"  # type: ignore[union-attr]
    counted = claude.messages.count_tokens(model="fake", messages=hello, tools=[WEATHER])  # type: ignore[list-item]
    assert counted.input_tokens == 3
