"""Structured output and tool calls without a model: the core objects' round trip,
calls as text (split whole or streamed), and the grammar checks made before queueing."""

from __future__ import annotations

import json

import pytest

from inferq.core.errors import InvalidRequest
from inferq.core.structured import OutputFormat, TokenLogprob, Tool, ToolCall, ToolChoice
from inferq.core.tool_text import CallStream, call_text, check_tools, split_answer
from inferq.core.work import ChatMessage, ChatRequest, ChatResult, Usage, request_from_dict
from inferq.engines import llama_structured

WEATHER = Tool("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}})
AUTO = ToolChoice("auto")


def test_requests_and_results_survive_the_store() -> None:
    request = ChatRequest(
        messages=(
            ChatMessage("user", "hi"),
            ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "get_weather", "{}"),)),
            ChatMessage("tool", "5C", tool_call_id="c1"),
        ),
        response_format=OutputFormat("json_schema", {"type": "object"}, "x", strict=True),
        tools=(WEATHER,),
        tool_choice=ToolChoice("function", "get_weather"),
        logprobs=True,
        top_logprobs=3,
        n=2,
    )
    assert request_from_dict(json.loads(json.dumps(request.to_dict()))) == request
    # a request stored before these fields existed still reads
    old = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 3}
    assert request_from_dict(old).tool_choice == AUTO
    top = TokenLogprob("a", -0.5, (97,))
    result = ChatResult(
        "",
        "tool_calls",
        Usage(3, 4),
        tool_calls=(ToolCall("", "get_weather", "{}"),),
        logprobs=(TokenLogprob("a", -0.1, (97,), (top,)),),
        others=(ChatResult("b", "stop", Usage(0, 1)),),
    )
    assert ChatResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert len(result.choices) == 2


def test_an_answer_is_a_call_only_in_the_exact_shape() -> None:
    text = call_text("get_weather", '{"city": "Oslo"}')
    assert split_answer(text, (WEATHER,), AUTO) == (
        "",
        ToolCall("", "get_weather", '{"city": "Oslo"}'),
    )
    for other in (
        "Hello",
        call_text("unknown", "{}"),
        '{"name": "get_weather", "arguments": [1]}',
        text[:-1],  # cut short
    ):
        assert split_answer(other, (WEATHER,), AUTO) == (other, None)
    assert split_answer(text, (WEATHER,), ToolChoice("none")) == (text, None)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_a_streamed_call_gives_its_name_then_its_arguments(size: int) -> None:
    arguments = '{"city": "Oslo"}'
    text = call_text("get_weather", arguments)
    stream = CallStream((WEATHER,), AUTO)
    pieces = [p for i in range(0, len(text), size) for p in stream.feed(text[i : i + size])]
    pieces += list(stream.finish())
    assert [p.name for p in pieces if p.name] == ["get_weather"]
    assert "".join(p.arguments for p in pieces) == arguments
    assert not "".join(p.text for p in pieces)
    assert stream.calling


@pytest.mark.parametrize("text", ["Hello there", '{"x": 1}', '{"name": "get', ""])
def test_streamed_text_comes_through_whole(text: str) -> None:
    stream = CallStream((WEATHER,), AUTO)
    pieces = [p for ch in text for p in stream.feed(ch)] + list(stream.finish())
    assert "".join(p.text for p in pieces) == text
    assert not any(p.name or p.arguments for p in pieces)


@pytest.mark.parametrize(
    ("tools", "choice", "words"),
    [
        ((WEATHER, WEATHER), AUTO, "a name of its own"),
        ((), ToolChoice("required"), "needs tools"),
        ((WEATHER,), ToolChoice("function", "other"), "'other' is not among the tools"),
    ],
)
def test_tool_choices_that_cannot_be_met(
    tools: tuple[Tool, ...], choice: ToolChoice, words: str
) -> None:
    with pytest.raises(InvalidRequest, match=words):
        check_tools(tools, choice)


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "strin"}, "strin"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"not": {"type": "string"}}, "not"),
        ({"type": "object", "if": {}, "then": {}}, "if"),
    ],
)
def test_schemas_that_cannot_be_enforced_are_named(schema: dict[str, object], words: str) -> None:
    request = ChatRequest(
        messages=(ChatMessage("user", "x"),),
        response_format=OutputFormat("json_schema", schema, "s"),
    )
    with pytest.raises(InvalidRequest, match=words) as caught:
        llama_structured.check(request)
    assert caught.value.param == "response_format"


def test_tool_parameters_are_checked_too() -> None:
    bad = Tool(
        "f", "", {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}
    )
    request = ChatRequest(messages=(), tools=(bad,), tool_choice=ToolChoice("required"))
    with pytest.raises(InvalidRequest, match="uniqueItems") as caught:
        llama_structured.check(request)
    assert caught.value.param == "tools"


def test_supported_schemas_pass() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 10},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
            "kind": {"anyOf": [{"const": "a"}, {"type": "integer", "minimum": 0}]},
        },
        "$defs": {"tag": {"type": "string", "enum": ["x", "y"]}},
        "required": ["name"],
        "additionalProperties": False,
    }
    for fmt in (OutputFormat("json_object"), OutputFormat("json_schema", schema, "s")):
        llama_structured.check(ChatRequest(messages=(), response_format=fmt))
    for choice in (AUTO, ToolChoice("required"), ToolChoice("function", "get_weather")):
        llama_structured.check(ChatRequest(messages=(), tools=(WEATHER,), tool_choice=choice))


def test_the_prompt_tells_the_model_about_tools_and_earlier_calls() -> None:
    request = ChatRequest(
        messages=(
            ChatMessage("system", "Be brief."),
            ChatMessage(
                "assistant", "", tool_calls=(ToolCall("c1", "get_weather", '{"city": "Oslo"}'),)
            ),
        ),
        tools=(WEATHER,),
        tool_choice=ToolChoice("required"),
        response_format=OutputFormat("json_object"),
    )
    system, call = llama_structured.prompt_messages(request)
    assert system["content"].startswith("Be brief.\n\nYou can call these functions:")
    assert "get_weather" in system["content"] and "You must call a function" in system["content"]
    assert call["content"] == call_text("get_weather", '{"city": "Oslo"}')
    plain = llama_structured.prompt_messages(ChatRequest(messages=(ChatMessage("user", "x"),)))
    assert plain == [{"role": "user", "content": "x"}]
