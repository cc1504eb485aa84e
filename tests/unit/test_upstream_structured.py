"""Structured output and tools on the openai_upstream engine: passed through to the
upstream as OpenAI names them, and its calls, log probabilities and choices read back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from inferq.core.errors import InvalidRequest
from inferq.core.structured import OutputFormat, Tool, ToolCall, ToolChoice
from inferq.core.work import ChatMessage, ChatRequest
from inferq.engines.base import AbortSignal
from tests.unit.test_upstream import (
    Upstream,
    chat,
    delta,
    endpoint,
    engine_for,
    finish,
    running,
    streamed,
)

WEATHER = Tool("get_weather", "The weather.", {"type": "object", "properties": {}})


def whole(body: dict[str, Any]) -> Any:
    return lambda request: httpx.Response(200, json=body)


async def test_tools_go_upstream_and_calls_come_back() -> None:
    completion = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_up",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
                "logprobs": {"content": [{"token": "{", "logprob": -0.5, "bytes": [123]}]},
            },
            {"index": 1, "message": {"content": "no"}, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4},
    }
    upstream = Upstream(a=[whole(completion)])
    history = ChatMessage("assistant", "", tool_calls=(ToolCall("c0", "get_weather", "{}"),))
    request = ChatRequest(
        messages=(ChatMessage("user", "Weather?"), history, ChatMessage("tool", "5C", (), "c0")),
        tools=(WEATHER,),
        tool_choice=ToolChoice("function", "get_weather"),
        response_format=OutputFormat("json_schema", {"type": "object"}, "x", strict=True),
        logprobs=True,
        top_logprobs=2,
        n=2,
    )
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        result = await engine.generate(request, abort=AbortSignal())
    (sent,) = upstream.bodies()
    assert "stream" not in sent  # the calls are read from a whole completion
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather.",
                "parameters": {"type": "object", "properties": {}},
                "strict": False,
            },
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
    }
    assert (sent["logprobs"], sent["top_logprobs"], sent["n"]) == (True, 2, 2)
    assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][2]["tool_call_id"] == "c0"
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == (ToolCall("call_up", "get_weather", '{"city": "Oslo"}'),)
    assert result.logprobs is not None and result.logprobs[0].logprob == -0.5
    assert [o.text for o in result.others] == ["no"]
    assert result.usage.completion_tokens == 4


async def test_a_format_alone_still_streams() -> None:
    upstream = Upstream(a=[streamed(delta("{}"), finish(), "[DONE]")])
    request = chat(response_format=OutputFormat("json_object"))
    async with running(engine_for(upstream, endpoint("a"))) as engine:
        result = await engine.generate(request, abort=AbortSignal())
    assert result.text == "{}"
    (sent,) = upstream.bodies()
    assert sent["stream"] is True and sent["response_format"] == {"type": "json_object"}


def test_plain_completions_are_refused_before_queueing() -> None:
    engine = engine_for(Upstream(a=[]), endpoint("a"))
    with pytest.raises(InvalidRequest, match="plain text prompts"):
        engine.check(ChatRequest(messages=(), prompt="Once upon"))
