"""The OpenAI-style chat body and chat.completion object.

Several providers share this shape: OpenAI's ``/v1/chat/completions``, the
payload of a Together queue job for a chat model, and Infera's sync endpoint
answer. Each dialect validates and renders it through these helpers and
translates it to the core :class:`~inferq.core.work.ChatRequest`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated, Any, Literal, Protocol, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from inferq.api.chat_structured import (
    MAX_TOP_LOGPROBS,
    NamedToolChoice,
    ResponseFormatIn,
    ToolCallIn,
    ToolIn,
    check_logprobs,
    render_logprobs,
    render_message,
    to_tool_choice,
)
from inferq.core.errors import InvalidRequest
from inferq.core.inputs import INT_MAX, INT_MIN
from inferq.core.models import Job
from inferq.core.tool_text import check_tools
from inferq.core.work import ROLES, ChatMessage, ChatRequest, ChatResult

BodyT = TypeVar("BodyT", bound=BaseModel)

#: the most answers one request may ask for (``n``)
MAX_CHOICES = 8
#: the largest signed 32-bit integer
INT32_MAX = 2**31 - 1

# Integers a request carries to the engine or the store. Pydantic reads a string of
# digits ("seed": "99…9") as a number of any size: past these bounds it is refused,
# naming the field, rather than stored or handed to an engine that cannot take it.

#: a signed 64-bit integer: what a store keeps (OpenAI documents ``seed`` so)
Int64 = Annotated[int, Field(ge=INT_MIN, le=INT_MAX)]
#: a size or count of 0 or more that a provider documents as an int64
NonNegativeInt64 = Annotated[int, Field(ge=0, le=INT_MAX)]
#: a count of 0 or more (``top_k``) within 32 bits, as llama.cpp takes it and
#: Fireworks documents it (int32)
NonNegativeInt32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
#: a count of 1 or more (``max_tokens``, seconds) within 32 bits, as llama.cpp takes it
#: and Fireworks documents ``maxTokens`` and ``n`` (int32)
PositiveInt32 = Annotated[int, Field(gt=0, le=INT32_MAX)]


def _known_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(sorted(ROLES))}")
    return role


#: a message's role: one of core's :data:`~inferq.core.work.ROLES`
Role = Annotated[str, AfterValidator(_known_role)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Part(Protocol):
    """A part of a message's content as a dialect's model reads it (a text part has text)."""

    type: str
    text: str | None


def text_of(
    content: str | Sequence[Part] | None, refuse: Callable[[int, str], InvalidRequest]
) -> str:
    """The text of a message's content: a string, or its text parts joined ("" for None).
    A part of another type is refused: ``refuse(n, type)`` is the error for part ``n``."""
    if content is None or isinstance(content, str):
        return content or ""
    pieces = []
    for n, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise refuse(n, part.type)
        pieces.append(part.text)
    return "".join(pieces)


def _part_refused(index: int, n: int, kind: str) -> InvalidRequest:
    return InvalidRequest(
        f"content part of type {kind!r} needs a model that takes it; only text parts are supported",
        param=f"messages.{index}.content.{n}.type",
    )


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[TextPart] | None = None
    #: an assistant message's earlier calls
    tool_calls: list[ToolCallIn] | None = None
    #: a tool message: the call it answers
    tool_call_id: str | None = None

    def to_message(self, index: int) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise InvalidRequest(
                f"messages.{index}.tool_call_id: a tool message needs the id of the call "
                "it answers",
                param=f"messages.{index}.tool_call_id",
            )
        content = self.content
        return ChatMessage(
            role=self.role,
            content=content if isinstance(content, str) else self.text(index),
            tool_calls=tuple(c.to_call() for c in self.tool_calls) if self.tool_calls else (),
            tool_call_id=self.tool_call_id,
        )

    def text(self, index: int) -> str:
        return text_of(self.content, partial(_part_refused, index))


class ChatBody(BaseModel):
    """An OpenAI-style chat completion request (``model`` is checked by the caller)."""

    model_config = ConfigDict(extra="allow")

    messages: list[MessageIn] = Field(min_length=1)
    max_tokens: PositiveInt32 | None = None
    max_completion_tokens: PositiveInt32 | None = None
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: NonNegativeInt32 | None = None
    stop: str | list[str] | None = None
    seed: Int64 | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    response_format: ResponseFormatIn | None = None
    tools: list[ToolIn] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | str | None = None
    #: accepted; an answer makes at most one call
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    def to_request(self) -> ChatRequest:
        tools = tuple(t.to_tool() for t in self.tools) if self.tools else ()
        choice = to_tool_choice(self.tool_choice, bool(tools))
        check_tools(tools, choice)
        return ChatRequest(
            messages=tuple(m.to_message(i) for i, m in enumerate(self.messages)),
            max_tokens=self.max_completion_tokens or self.max_tokens,
            **sampling(self),
            response_format=self.response_format.to_format() if self.response_format else None,
            tools=tools,
            tool_choice=choice,
            logprobs=bool(self.logprobs),
            top_logprobs=check_logprobs(bool(self.logprobs), self.top_logprobs),
            n=self.n,
        )


class Sampled(Protocol):
    """The sampling fields OpenAI's chat and completions bodies share."""

    temperature: float
    top_p: float
    top_k: int | None
    stop: str | list[str] | None
    seed: int | None
    presence_penalty: float
    frequency_penalty: float


def sampling(body: Sampled) -> dict[str, Any]:
    """``body``'s sampling fields as :class:`ChatRequest` names them."""
    return {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "stop": (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ()),
        "seed": body.seed,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
    }


def parse_chat_body(data: Any, *, prefix: str = "") -> ChatBody:
    """Validate ``data`` as a chat body; InvalidRequest naming the field otherwise."""
    return validate_body(ChatBody, data, prefix=prefix)


def validate_body(model: type[BodyT], data: Any, *, prefix: str = "") -> BodyT:
    """Validate ``data`` as ``model`` (a body inside a batch line: under ``prefix``);
    InvalidRequest naming the first field that fails otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
        raise InvalidRequest(f"{param or 'body'}: {first['msg']}", param=param or None) from exc


def completion_id(job: Job) -> str:
    return "chatcmpl-" + job.id


def render_completion(job: Job) -> dict[str, Any]:
    """The chat.completion object of a succeeded job."""
    assert isinstance(job.result, ChatResult), "only succeeded chat jobs have a completion"
    return {
        "id": completion_id(job),
        "object": "chat.completion",
        "created": int(job.created_at),
        "model": job.model,
        "choices": [
            {
                "index": index,
                "message": render_message(choice, job.id),
                "logprobs": render_logprobs(choice.logprobs),
                "finish_reason": choice.finish_reason,
            }
            for index, choice in enumerate(job.result.choices)
        ],
        "usage": render_usage(job),
    }


def render_usage(job: Job) -> dict[str, Any]:
    usage = job.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def render_chunk(
    job: Job,
    *,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One chat.completion.chunk; with ``usage`` alone, the final usage chunk."""
    chunk: dict[str, Any] = {
        "id": completion_id(job),
        "object": "chat.completion.chunk",
        "created": int(job.created_at or time.time()),
        "model": job.model,
        "choices": [],
    }
    if usage is not None:
        chunk["usage"] = usage
    else:
        chunk["choices"] = [
            {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
        ]
    return chunk
