"""Together queue wire models (field names exactly as Together spells them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class QueueJobRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    payload: dict[str, Any]
    info: dict[str, Any] | None = None
    priority: int = 0


class QueueCancelRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    request_id: str = Field(min_length=1)


class QueueClearRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
