"""OpenAI's structured output, tools and log probabilities on the chat body: the
request fields (``response_format``, ``tools``, ``tool_choice``, ``logprobs``,
``top_logprobs``, messages' ``tool_calls`` and ``tool_call_id``) to core's
:mod:`~inferq.core.structured` objects, and back to the answer's shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from inferq.core.errors import InvalidRequest
from inferq.core.structured import (
    JSON_OBJECT,
    JSON_SCHEMA,
    TOOL_FUNCTION,
    TOOL_MODES,
    OutputFormat,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolChoice,
)
from inferq.core.tool_text import CallStream, StreamPiece, call_id
from inferq.core.work import ChatRequest, ChatResult

#: the most alternatives ``top_logprobs`` may ask for (OpenAI's bound)
MAX_TOP_LOGPROBS = 20


class FunctionIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionIn

    def to_tool(self) -> Tool:
        f = self.function
        return Tool(
            name=f.name,
            description=f.description,
            parameters=f.parameters or {},
            strict=bool(f.strict),
        )


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str = ""


class ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction

    def to_call(self) -> ToolCall:
        return ToolCall(id=self.id, name=self.function.name, arguments=self.function.arguments)


class JsonSchemaIn(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaIn | None = None

    def to_format(self) -> OutputFormat | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return OutputFormat(kind=JSON_OBJECT)
        spec = self.json_schema
        if spec is None:
            raise InvalidRequest(
                "response_format.json_schema: is required with type json_schema",
                param="response_format.json_schema",
            )
        return OutputFormat(
            kind=JSON_SCHEMA, schema=spec.json_schema, name=spec.name, strict=bool(spec.strict)
        )


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: CalledFunction | dict[str, Any]


def to_tool_choice(raw: str | NamedToolChoice | None, has_tools: bool) -> ToolChoice:
    """OpenAI's ``tool_choice``: a mode, or ``{"type": "function", "function": {"name"}}``.
    Its default is ``auto`` with tools and ``none`` without."""
    if raw is None:
        return ToolChoice("auto" if has_tools else "none")
    if isinstance(raw, str):
        if raw not in TOOL_MODES - {TOOL_FUNCTION}:
            raise InvalidRequest(
                f"tool_choice: {raw!r} is not one of 'auto', 'none', 'required' or a "
                'named function ({"type": "function", "function": {"name": ...}})',
                param="tool_choice",
            )
        return ToolChoice(raw)
    function = raw.function
    name = function.name if isinstance(function, CalledFunction) else function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("tool_choice.function.name: is required", param="tool_choice")
    return ToolChoice(TOOL_FUNCTION, name)


def check_logprobs(logprobs: bool, top_logprobs: int | None) -> int:
    """How many alternatives to report per token; InvalidRequest for ``top_logprobs``
    without ``logprobs``."""
    if top_logprobs is not None and top_logprobs > 0 and not logprobs:
        raise InvalidRequest(
            "top_logprobs: logprobs must be true to use top_logprobs", param="top_logprobs"
        )
    return top_logprobs or 0


def render_tool_calls(calls: tuple[ToolCall, ...], job_id: str) -> list[dict[str, Any]]:
    """OpenAI's ``message.tool_calls``."""
    return [
        {
            "id": call.id or call_id(job_id, i),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for i, call in enumerate(calls)
    ]


def render_message(result: ChatResult, job_id: str) -> dict[str, Any]:
    """One choice's ``message``: text, or (with calls) the calls and no text."""
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.tool_calls:
        message["content"] = result.text or None
        message["tool_calls"] = render_tool_calls(result.tool_calls, job_id)
    return message


def _token(entry: TokenLogprob) -> dict[str, Any]:
    return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.bytes)}


def render_logprobs(entries: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    """A chat choice's ``logprobs``: ``{"content": [...], "refusal": null}``."""
    if entries is None:
        return None
    content = [
        {**_token(entry), "top_logprobs": [_token(top) for top in entry.top]} for entry in entries
    ]
    return {"content": content, "refusal": None}


class ChatDeltas:
    """A streamed chat answer as OpenAI's chunk deltas: text as ``content``, a call
    as ``tool_calls`` (its id, type and name first, then its arguments in pieces)."""

    def __init__(self, request: ChatRequest, job_id: str) -> None:
        self._split = CallStream(request.tools, request.tool_choice)
        self._job_id = job_id
        self.calls = 0

    def feed(self, piece: str) -> list[dict[str, Any]]:
        return [self._delta(p) for p in self._split.feed(piece)]

    def finish(self, result: ChatResult) -> list[dict[str, Any]]:
        """The deltas still held back, and the calls of a result that streamed none
        (an engine that sends them whole)."""
        deltas = [self._delta(p) for p in self._split.finish()]
        if not self.calls and result.tool_calls:
            calls = render_tool_calls(result.tool_calls, self._job_id)
            deltas.append({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})
        return deltas

    def _delta(self, piece: StreamPiece) -> dict[str, Any]:
        if piece.name is not None:
            self.calls += 1
            call = {
                "index": 0,
                "id": call_id(self._job_id, 0),
                "type": "function",
                "function": {"name": piece.name, "arguments": ""},
            }
            return {"tool_calls": [call]}
        if piece.arguments:
            return {"tool_calls": [{"index": 0, "function": {"arguments": piece.arguments}}]}
        return {"content": piece.text}


def refuse_stream(request: ChatRequest) -> None:
    """InvalidRequest for what a stream does not carry: several answers, log probabilities."""
    if request.n > 1:
        raise InvalidRequest("n: streaming gives one answer; use n=1 with stream", param="n")
    if request.logprobs:
        raise InvalidRequest(
            "logprobs: log probabilities are not streamed; ask without stream",
            param="logprobs",
        )
