"""Anthropic's Messages API: ``/v1/messages`` and ``/v1/messages/count_tokens``.

``/v1/`` is OpenAI's; the longer prefix ``/v1/messages`` makes its errors Anthropic's.
"""

from __future__ import annotations

from inferq.api.anthropic.router import router
from inferq.api.anthropic.translate import STATUSES, render_error
from inferq.api.dialect import Dialect

DIALECT = Dialect(
    name="anthropic",
    router=router,
    prefixes=("/v1/messages",),
    render_error=render_error,
    statuses=STATUSES,
)

__all__ = ["DIALECT"]
