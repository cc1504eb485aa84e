"""A chat request as plain data: the same as the dataclass's own ``asdict`` (with lists
for its sequences); as a job stores it, without the fields at their defaults; either
read back whole, and a job stored before with every field read back the same."""

from __future__ import annotations

import dataclasses
import json

from inferq.core.structured import OutputFormat, Tool, ToolCall, ToolChoice
from inferq.core.work import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    PayloadRequest,
    PayloadResult,
    Usage,
    request_from_dict,
    request_to_dict,
    result_from_dict,
)

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


PLAIN = ChatRequest(messages=(ChatMessage("user", "hi"),), max_tokens=32)


def stored(request: ChatRequest | EmbedRequest | PayloadRequest) -> dict[str, object]:
    data: dict[str, object] = json.loads(json.dumps(request_to_dict(request)))
    return data


def test_a_job_stores_only_what_differs_from_the_defaults() -> None:
    assert stored(PLAIN) == {"max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}
    # every field of FULL but its prompt (None, for a chat) differs from its default
    assert stored(FULL) == {
        k: v for k, v in json.loads(json.dumps(FULL.to_dict())).items() if k != "prompt"
    }
    one = dataclasses.replace(PLAIN, temperature=0.0, stop=("x",), tool_choice=ToolChoice("none"))
    assert set(stored(one)) == {"max_tokens", "messages", "temperature", "stop", "tool_choice"}


def test_the_stored_form_reads_back_whole_and_so_does_a_full_one() -> None:
    changed = [
        dataclasses.replace(PLAIN, **{name: value})
        for name, value in {
            "max_tokens": None, "temperature": 0.0, "top_p": 0.5, "top_k": 1, "seed": 0,
            "presence_penalty": -1.0, "frequency_penalty": 1.0, "logprobs": True,
            "top_logprobs": 1, "n": 3, "prompt": "", "stop": ("",),
            "response_format": OutputFormat(kind="json_object"),
            "tools": FULL.tools, "tool_choice": ToolChoice("required"),
        }.items()
    ]  # fmt: skip
    for request in (PLAIN, FULL, *changed):
        assert request_from_dict(stored(request)) == request
        assert request_from_dict(json.loads(json.dumps(request.to_dict()))) == request
    for other in (EmbedRequest(inputs=("a", "b")), PayloadRequest(payload={"x": [1]})):
        assert request_from_dict(stored(other)) == other


def test_usage_is_stored_as_asdict_gave_and_read_back() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=5, cached_tokens=2)
    assert usage.to_dict() == dataclasses.asdict(usage)
    for result in (
        ChatResult(text="x", finish_reason="stop", usage=usage),
        EmbedResult(vectors=((0.5,),), usage=usage),
        PayloadResult(outputs={"a": 1}, usage=usage),
    ):
        assert result_from_dict(json.loads(json.dumps(result.to_dict()))) == result
