"""Anthropic's Messages API wire models: the request of ``POST /v1/messages`` and of
``POST /v1/messages/count_tokens``.

Unknown fields are accepted (Anthropic adds fields often; a client that sends a newer
one still works); the ones that change what the model is asked to do and that inferq
cannot honour (server tools, content blocks other than text, ``tool_use`` and
``tool_result``) are refused by name. Tool use maps onto core's (:mod:`.tools`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from inferq.api.anthropic.tools import to_tool_choice, to_tools, turn_messages
from inferq.api.chat import NonNegativeInt32, PositiveInt32, text_of
from inferq.core.errors import InvalidRequest
from inferq.core.work import ChatMessage, ChatRequest


class ContentBlock(BaseModel):
    """One block of a message's content: text, or (:mod:`.tools`) a tool's use or result."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class MessageParam(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


def blocks_text(content: str | list[ContentBlock], param: str) -> str:
    """The text of a string or of text blocks; InvalidRequest naming any other block."""

    def refused(n: int, kind: str) -> InvalidRequest:
        return InvalidRequest(
            f"{param}.{n}: content blocks of type {kind!r} are not supported; only text blocks are",
            param=f"{param}.{n}.type",
        )

    return text_of(content, refused)


class CountTokensRequest(BaseModel):
    """The prompt part of a message request: what ``count_tokens`` counts."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[ContentBlock] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None

    def chat_messages(self) -> tuple[ChatMessage, ...]:
        system = blocks_text(self.system, "system") if self.system is not None else ""
        turns = tuple(
            message
            for i, m in enumerate(self.messages)
            for message in turn_messages(m.role, _raw(m.content), f"messages.{i}.content")
        )
        return ((ChatMessage("system", system),) if system else ()) + turns

    def to_prompt(self) -> ChatRequest:
        """The messages and the tools: what the model reads."""
        return ChatRequest(**self.prompt_fields())

    def prompt_fields(self) -> dict[str, Any]:
        tools = to_tools(self.tools)
        return {
            "messages": self.chat_messages(),
            "tools": tools,
            "tool_choice": to_tool_choice(self.tool_choice, tools),
        }


def _raw(content: str | list[ContentBlock]) -> str | list[dict[str, Any]]:
    return content if isinstance(content, str) else [b.model_dump() for b in content]


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: PositiveInt32
    stop_sequences: list[str] | None = None
    temperature: float = Field(default=1.0, ge=0, le=1)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: NonNegativeInt32 | None = None
    metadata: dict[str, Any] | None = None
    stream: bool = False
    #: inferq extension: higher runs first among sync requests
    priority: int = 0
    #: inferq extension: seconds before the request is cancelled with a timeout error
    timeout: float | None = Field(default=None, gt=0)

    def to_request(self) -> ChatRequest:
        return ChatRequest(
            **self.prompt_fields(),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=tuple(self.stop_sequences or ()),
        )
