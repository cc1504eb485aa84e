"""Infera wire models, as its OpenAPI documents them (every field required)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from inferq.api.chat import NonNegativeInt32, PositiveInt32, Role
from inferq.core.work import ChatMessage


def _issued(value: UUID) -> UUID:
    """Infera's job paths take version 4 UUIDs, and its submits here get such ids; the
    jobs of inferq's other dialects have time-ordered (version 7) ids, which a tenant may
    read here too. Any other UUID is refused with the error Infera's ``UUID4`` gives."""
    if value.version not in (4, 7):
        raise PydanticCustomError(
            "uuid_version", "UUID version 4 expected", {"expected_version": 4}
        )
    return value


#: a job id in an Infera path (``/get_result/{job_id}``)
JobId = Annotated[UUID, AfterValidator(_issued)]


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
