"""OpenAI wire models."""

from __future__ import annotations

from pydantic import Field

from inferq.api.chat import ChatBody


class ChatCompletionRequest(ChatBody):
    model: str = Field(min_length=1)
    #: inferq extension: higher runs first among sync requests
    priority: int = 0
    #: inferq extension: seconds before the request is cancelled with a timeout error
    timeout: float | None = Field(default=None, gt=0)
