"""OpenAI's API: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``,
``/v1/files``, ``/v1/batches`` and ``/v1/responses``; the dialect of every ``/v1/`` path
no other one claims."""

from __future__ import annotations

from inferq.api.dialect import Dialect
from inferq.api.openai import batches, embeddings, files, responses
from inferq.api.openai.batch_format import OpenAIBatchFormat
from inferq.api.openai.router import router as chat_router
from inferq.api.openai.translate import render_error
from inferq.api.routing import Router

#: every OpenAI endpoint
router = Router()
router.include_router(chat_router)
router.include_router(embeddings.router)
router.include_router(files.router)
router.include_router(batches.router)
router.include_router(responses.router)


def is_upload(path: str) -> bool:
    """``POST /v1/files`` (multipart)."""
    return path == "/v1/files"


DIALECT = Dialect(
    name="openai",
    router=router,
    prefixes=("/v1/",),
    render_error=render_error,
    is_upload=is_upload,
    batch_format=OpenAIBatchFormat(),
)

__all__ = ["DIALECT"]
