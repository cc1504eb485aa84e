"""Anthropic's tool use through the official ``anthropic`` SDK on SmolLM2: a forced call
(``tool_choice`` ``any`` or a named tool) comes back as a ``tool_use`` block whose input
matches the tool's schema, plain, streamed and on every request of a message batch; its
result goes back to the model; ``count_tokens`` counts the tools as the model reads them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.integration.helpers import MODEL, wait_until
from tests.support.server import Server

pytestmark = pytest.mark.integration

WEATHER: Any = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
ASK: list[anthropic.types.MessageParam] = [
    {"role": "user", "content": "What is the weather in Paris?"}
]


@pytest.fixture
def claude(server: Server, api_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=api_key, base_url=server.url, max_retries=0) as client:
        yield client


def _call(message: anthropic.types.Message) -> anthropic.types.ToolUseBlock:
    assert message.stop_reason == "tool_use", message
    calls = [b for b in message.content if isinstance(b, anthropic.types.ToolUseBlock)]
    assert len(calls) == 1, message.content
    call = calls[0]
    assert call.name == "get_weather" and call.id
    assert isinstance(call.input, dict) and set(call.input) == {"city", "unit"}
    assert isinstance(call.input["city"], str) and call.input["unit"] in ("celsius", "fahrenheit")
    return call


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}])
def test_a_forced_tool_call(claude: anthropic.Anthropic, choice: Any) -> None:
    message = claude.messages.create(
        model=MODEL, max_tokens=100, messages=ASK, tools=[WEATHER], tool_choice=choice
    )
    _call(message)


def test_a_streamed_tool_call_and_its_result(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=MODEL, max_tokens=100, messages=ASK, tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        final = stream.get_final_message()
    call = _call(final)
    answer = claude.messages.create(
        model=MODEL,
        max_tokens=12,
        tools=[WEATHER],
        messages=[
            *ASK,
            {"role": "assistant", "content": [call.model_dump()]},  # type: ignore[list-item]
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}
                ],
            },
        ],
        tool_choice={"type": "none"},
    )
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert answer.content[0].type == "text" and answer.content[0].text.strip()


def test_count_tokens_counts_the_tools(claude: anthropic.Anthropic) -> None:
    bare = claude.messages.count_tokens(model=MODEL, messages=ASK)
    counted = claude.messages.count_tokens(model=MODEL, messages=ASK, tools=[WEATHER])
    assert counted.input_tokens > bare.input_tokens + 20  # the tool's description and schema
    message = claude.messages.create(
        model=MODEL, max_tokens=100, messages=ASK, tools=[WEATHER], tool_choice={"type": "any"}
    )
    read = message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
    assert (
        read
        == claude.messages.count_tokens(
            model=MODEL, messages=ASK, tools=[WEATHER], tool_choice={"type": "any"}
        ).input_tokens
    )


def test_a_message_batch_of_forced_tool_calls(claude: anthropic.Anthropic) -> None:
    cities = ["Paris", "Tokyo", "Lima"]
    params: Any = {"model": MODEL, "max_tokens": 100, "tools": [WEATHER]}
    params["tool_choice"] = {"type": "tool", "name": "get_weather"}
    batch = claude.messages.batches.create(
        requests=[
            {
                "custom_id": city,
                "params": {
                    **params,
                    "messages": [{"role": "user", "content": f"Weather in {city}?"}],
                },
            }
            for city in cities
        ]
    )
    wait_until(
        lambda: claude.messages.batches.retrieve(batch.id).processing_status == "ended",
        interval=0.2,
        what="the batch to end",
    )
    results = {line.custom_id: line.result for line in claude.messages.batches.results(batch.id)}
    assert set(results) == set(cities)
    for result in results.values():
        assert result.type == "succeeded", result
        _call(result.message)
