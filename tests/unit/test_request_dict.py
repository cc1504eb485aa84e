"""A chat request's stored form: the same as the dataclass's own ``asdict`` (with lists
for its sequences), and read back whole."""

from __future__ import annotations

import dataclasses
import json

from inferq.core.models import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    EmbedResult,
    PayloadResult,
    Usage,
    result_from_dict,
)
from inferq.core.structured import OutputFormat, Tool, ToolCall, ToolChoice

FULL = ChatRequest(
    messages=(
        ChatMessage("system", "Be brief."),
        ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "f", '{"x": 1}'),)),
        ChatMessage("tool", "42", tool_call_id="c1"),
    ),
    max_tokens=16,
    temperature=0.2,
    top_p=0.9,
    top_k=40,
    stop=("\n\n", "END"),
    seed=7,
    presence_penalty=0.1,
    frequency_penalty=0.2,
    response_format=OutputFormat(kind="json_schema", schema={"type": "object"}, name="o"),
    tools=(Tool(name="f", description="d", parameters={"type": "object"}),),
    tool_choice=ToolChoice(mode="function", name="f"),
    logprobs=True,
    top_logprobs=3,
    n=2,
)


def legacy(request: ChatRequest) -> dict[str, object]:
    data = dataclasses.asdict(request)
    data["messages"] = [m.to_dict() for m in request.messages]
    data["stop"] = list(request.stop)
    return data


def test_the_stored_form_is_what_asdict_gave() -> None:
    for request in (FULL, ChatRequest(messages=(ChatMessage("user", "hi"),))):
        assert json.loads(json.dumps(request.to_dict())) == json.loads(json.dumps(legacy(request)))


def test_it_reads_back_whole() -> None:
    assert ChatRequest.from_dict(json.loads(json.dumps(FULL.to_dict()))) == FULL


def test_usage_is_stored_as_asdict_gave_and_read_back() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=5, cached_tokens=2)
    assert usage.to_dict() == dataclasses.asdict(usage)
    for result in (
        ChatResult(text="x", finish_reason="stop", usage=usage),
        EmbedResult(vectors=((0.5,),), usage=usage),
        PayloadResult(outputs={"a": 1}, usage=usage),
    ):
        assert result_from_dict(json.loads(json.dumps(result.to_dict()))) == result
