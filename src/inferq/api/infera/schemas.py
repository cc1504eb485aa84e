"""Infera wire models, as its OpenAPI documents them (every field required)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from inferq.api.chat import NonNegativeInt32, PositiveInt32, Role
from inferq.core.models import ChatMessage


class InputMessage(BaseModel):
    role: Role
    content: str

    def to_core(self) -> ChatMessage:
        return ChatMessage(role=self.role, content=self.content)


class JobRequest(BaseModel):
    model: str = Field(min_length=1)
    messages: list[InputMessage] = Field(min_length=1)
    #: 0 means "no limit": generate until the model stops or the context is full
    max_output: NonNegativeInt32
    temperature: float = Field(ge=0, le=2)


class ChatCompletionsRequest(BaseModel):
    model: str = Field(min_length=1)
    messages: list[InputMessage] = Field(min_length=1)
    max_tokens: PositiveInt32
    temperature: float = Field(ge=0, le=2)
    request_timeout_time: PositiveInt32 | None = 240
