"""Anthropic's Messages API: ``/v1/messages``, ``/v1/messages/count_tokens`` and the
Message Batches at ``/v1/messages/batches``.

``/v1/`` is OpenAI's; the longer prefix ``/v1/messages`` makes its errors Anthropic's.
"""

from __future__ import annotations

from inferq.api.anthropic import batches
from inferq.api.anthropic.batch_format import AnthropicBatchFormat
from inferq.api.anthropic.batch_schemas import MAX_BODY_BYTES
from inferq.api.anthropic.router import router as messages_router
from inferq.api.anthropic.translate import STATUSES, render_error
from inferq.api.dialect import Dialect
from inferq.api.routing import Router

#: every Anthropic endpoint
router = Router()
router.include_router(messages_router)
router.include_router(batches.router)


def body_limit(path: str) -> int | None:
    """Anthropic's 256 MB for a message batch's create body; the app's limit elsewhere."""
    return MAX_BODY_BYTES if path == batches.router.prefix else None


DIALECT = Dialect(
    name="anthropic",
    router=router,
    prefixes=("/v1/messages",),
    render_error=render_error,
    statuses=STATUSES,
    body_limit=body_limit,
    batch_format=AnthropicBatchFormat(),
)

__all__ = ["DIALECT"]
