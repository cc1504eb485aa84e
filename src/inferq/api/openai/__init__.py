"""OpenAI's API: ``/v1/chat/completions`` and ``/v1/models``."""

from __future__ import annotations

from inferq.api.openai.router import router
from inferq.api.openai.translate import render_error

__all__ = ["render_error", "router"]
