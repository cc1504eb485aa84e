"""OpenAI's API: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``,
``/v1/files`` and ``/v1/batches``."""

from __future__ import annotations

from fastapi import APIRouter

from inferq.api.openai import batches, embeddings, files
from inferq.api.openai.router import router as chat_router
from inferq.api.openai.translate import render_error

#: every OpenAI endpoint, mounted by the app
router = APIRouter()
router.include_router(chat_router)
router.include_router(embeddings.router)
router.include_router(files.router)
router.include_router(batches.router)

__all__ = ["render_error", "router"]
