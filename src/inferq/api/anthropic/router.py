"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.
Handlers translate and delegate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from inferq.api.anthropic import translate as t
from inferq.api.anthropic.schemas import CountTokensRequest, MessagesRequest
from inferq.api.deps import CallerDep, ServicesDep
from inferq.api.errors import status_of
from inferq.api.routing import Router
from inferq.api.sync import (
    JobText,
    Watched,
    abandon,
    answer_when_finished,
    event_stream,
    finished_or_raise,
    submit_watched,
)
from inferq.core.errors import InferqError, public
from inferq.core.service import JobService
from inferq.core.tool_text import may_call
from inferq.core.work import ChatRequest

router = Router(prefix="/v1/messages", tags=["anthropic"])


@router.post("", response_model=None)
async def create_message(
    body: MessagesRequest, request: Request, caller: CallerDep, services: ServicesDep
) -> dict[str, Any] | Response:
    watched = await submit_watched(
        services, caller, body, body.to_request(), origin="anthropic", stream=body.stream
    )
    if body.stream:
        return event_stream(_stream(services.jobs, watched), closes=watched[1])
    return await answer_when_finished(request, services.jobs, watched, t.render_message)


@router.post("/count_tokens")
async def count_tokens(
    body: CountTokensRequest, caller: CallerDep, services: ServicesDep
) -> dict[str, int]:
    """The prompt's tokens by the model's own chat template and tokenizer."""
    engine = services.registry.get(body.model)
    tokens = await engine.count_tokens(body.to_prompt())
    return {"input_tokens": tokens}


async def _stream(jobs: JobService, watched: Watched) -> AsyncIterator[str]:
    """Anthropic's event sequence, each text piece as the engine produces it; an answer
    that may call a tool is held until it ends and sent block by block (a call's text is
    not the answer's text)."""
    job = watched[0]
    finished = False
    request = job.request
    held = isinstance(request, ChatRequest) and may_call(request.tools, request.tool_choice)
    try:
        yield t.sse(t.message_start(job))
        if not held:
            yield t.sse(t.BLOCK_START)
        yield t.sse(t.PING)
        text = JobText(jobs, watched)
        async for piece in text:
            if not held:
                yield t.sse(t.text_delta(piece))
        done = finished_or_raise(text.ended())
        finished = True
        for event in t.whole_blocks(done) if held else [t.BLOCK_STOP]:
            yield t.sse(event)
        yield t.sse(t.message_delta(done))
        yield t.sse(t.MESSAGE_STOP)
    except InferqError as exc:
        finished = True
        status = status_of(exc, t.STATUSES)
        yield t.sse(t.error_body(public(exc), status))
    finally:
        if not finished:
            abandon(jobs, job)
