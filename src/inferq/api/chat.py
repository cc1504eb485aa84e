"""The OpenAI-style chat body and chat.completion object.

Several providers share this shape: OpenAI's ``/v1/chat/completions``, the
payload of a Together queue job for a chat model, and Infera's sync endpoint
answer. Each dialect validates and renders it through these helpers and
translates it to the core :class:`~inferq.core.models.ChatRequest`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from inferq.core.errors import InvalidRequest
from inferq.core.models import ROLES, ChatMessage, ChatRequest, ChatResult, Job


def _known_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(sorted(ROLES))}")
    return role


#: a message's role: one of core's :data:`~inferq.core.models.ROLES`
Role = Annotated[str, AfterValidator(_known_role)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[TextPart] | None = None

    def text(self, index: int) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        pieces = []
        for n, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise InvalidRequest(
                    f"content part of type {part.type!r} needs a model that takes it; "
                    "only text parts are supported",
                    param=f"messages.{index}.content.{n}.type",
                )
            pieces.append(part.text)
        return "".join(pieces)


class ChatBody(BaseModel):
    """An OpenAI-style chat completion request (``model`` is checked by the caller)."""

    model_config = ConfigDict(extra="allow")

    messages: list[MessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Literal[1] = 1
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    def to_request(self) -> ChatRequest:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return ChatRequest(
            messages=tuple(
                ChatMessage(role=m.role, content=m.text(i)) for i, m in enumerate(self.messages)
            ),
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=stop,
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )


def parse_chat_body(data: Any, *, prefix: str = "") -> ChatBody:
    """Validate ``data`` as a chat body; InvalidRequest naming the field otherwise."""
    try:
        return ChatBody.model_validate(data)
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
                "index": 0,
                "message": {"role": "assistant", "content": job.result.text},
                "logprobs": None,
                "finish_reason": job.result.finish_reason,
            }
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
