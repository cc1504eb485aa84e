"""OpenAI's chat and models endpoints. Handlers translate and delegate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from inferq.api.chat import render_chunk, render_completion, render_usage
from inferq.api.chat_structured import ChatDeltas, refuse_stream
from inferq.api.deps import CallerDep, ServicesDep, get_services
from inferq.api.openai import completions
from inferq.api.openai.schemas import ChatCompletionRequest
from inferq.api.openai.streaming import ended, framed
from inferq.api.openai.translate import sse
from inferq.api.routing import Router
from inferq.api.sync import (
    JobText,
    Watched,
    answer_when_finished,
    event_stream,
    submit_watched,
)
from inferq.core.service import JobService
from inferq.core.work import ChatRequest

router = Router(prefix="/v1", tags=["openai"])
router.include_router(completions.router)


# the services are fetched here, not as a dependency: each one FastAPI solves costs a
# request its own pass
@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, caller: CallerDep
) -> dict[str, Any] | Response:
    services = await get_services(request)
    chat = body.to_request()
    if body.stream:
        refuse_stream(chat)
    watched = await submit_watched(
        services, caller, body, chat, origin="openai", stream=body.stream
    )
    if body.stream:
        job, sub = watched
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        events = _stream(services.jobs, watched, include_usage=include_usage)
        return event_stream(framed(services.jobs, job, events), closes=sub)
    return await answer_when_finished(request, services.jobs, watched, render_completion)


async def _stream(jobs: JobService, watched: Watched, *, include_usage: bool) -> AsyncIterator[str]:
    job = watched[0]
    yield sse(render_chunk(job, delta={"role": "assistant", "content": ""}))
    assert isinstance(job.request, ChatRequest)
    deltas = ChatDeltas(job.request, job.id)
    text = JobText(jobs, watched)
    async for piece in text:
        for delta in deltas.feed(piece):
            yield sse(render_chunk(job, delta=delta))
    done, result = ended(text.ended())
    for delta in deltas.finish(result):
        yield sse(render_chunk(job, delta=delta))
    yield sse(render_chunk(done, finish_reason=result.finish_reason))
    if include_usage:
        yield sse(render_chunk(done, usage=render_usage(done)))


@router.get("/models")
async def list_models(caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [_model(name) for name in services.registry.names()],
    }


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    services.registry.get(model_id)
    return _model(model_id)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "inferq"}
