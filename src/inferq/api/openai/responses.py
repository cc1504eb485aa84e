"""OpenAI's Responses API: ``/v1/responses``. Handlers translate and delegate.

A response is a job. Without ``background`` it is a sync request (the most urgent
class, due by its timeout) and the answer waits for it, or streams it; with
``background: true`` it is queued durably as an async job (below sync requests, above
batch rows), answered at once with status ``queued``, and moves through
``in_progress`` to ``completed``, ``incomplete``, ``failed`` or ``cancelled``; its
stream, when asked for, can be resumed by sequence number
(:mod:`inferq.api.openai.responses_stream`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Query, Request
from fastapi.responses import Response

from inferq.api.deps import CallerDep, Services, ServicesDep
from inferq.api.openai import responses_schemas as schemas
from inferq.api.openai.responses_schemas import ORIGIN, Record, ResponseCreate, render_response
from inferq.api.openai.responses_stream import Transcript, ended_transcript, replay, transcripts
from inferq.api.routing import Router
from inferq.api.sync import (
    KEEPALIVE_SECONDS,
    ClientGone,
    abandon,
    event_stream,
    finished_or_raise,
    wait_for_client,
)
from inferq.core import jsontext
from inferq.core.errors import Conflict, InferqError, InvalidRequest, NotFound, public
from inferq.core.ids import new_uuid7
from inferq.core.models import ApiKey, Job
from inferq.core.states import ServiceClass

router = Router(prefix="/v1", tags=["openai"])


@router.post("/responses", response_model=None)
async def create_response(
    body: ResponseCreate, request: Request, caller: CallerDep, services: ServicesDep
) -> dict[str, Any] | Response:
    body.check()
    items = schemas.input_items(body.input or "")
    if body.previous_response_id is not None:
        previous = await _stored(
            services, caller, body.previous_response_id, "previous_response_id"
        )
        items = schemas.conversation(previous) + items
    job_id = new_uuid7()
    follow = transcripts(services.jobs)
    sub = follow.subscribe(job_id) if body.stream else None
    try:
        job = await services.jobs.submit(
            tenant=caller.tenant,
            model=body.model,
            request=schemas.chat_request(body, items),
            origin=ORIGIN,
            service_class=ServiceClass.ASYNC if body.background else ServiceClass.INTERACTIVE,
            priority=body.priority,
            inputs=schemas.record(body, items).to_dict(),
            timeout=None if body.background else body.timeout or services.settings.sync_timeout,
            job_id=job_id,
        )
    except BaseException as exc:
        if sub is not None:
            sub.close()
        if isinstance(exc, InvalidRequest) and exc.param == "response_format":
            # the engine names the chat field; a response carries it as text.format
            message = exc.message.replace("response_format", "text.format")
            raise InvalidRequest(message, param="text.format") from exc
        raise
    if sub is not None:
        transcript = follow.follow(job, sub)
        return event_stream(
            _sse(services, transcript, after=None, owned=not body.background),
            keepalive=KEEPALIVE_SECONDS,
        )
    if body.background:
        return render_response(job)
    try:
        done = await wait_for_client(request, services.jobs, job)
    except ClientGone:
        return Response(status_code=499)
    answer = render_response(finished_or_raise(done))
    await _forget_unstored(services, done)
    return answer


@router.get("/responses/{response_id}", response_model=None)
async def get_response(
    response_id: str,
    caller: CallerDep,
    services: ServicesDep,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1)] = None,
) -> dict[str, Any] | Response:
    job = await _stored(services, caller, response_id)
    if not stream:
        return render_response(job)
    if not Record.of(job).background:
        raise InvalidRequest(
            "stream: only a background response can be streamed again", param="stream"
        )
    transcript = (
        ended_transcript(job) if job.state.terminal else transcripts(services.jobs).follow(job)
    )
    return event_stream(
        _sse(services, transcript, after=starting_after, owned=False),
        keepalive=KEEPALIVE_SECONDS,
    )


@router.post("/responses/{response_id}/cancel")
async def cancel_response(
    response_id: str, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    job = await _stored(services, caller, response_id)
    if not Record.of(job).background:
        raise InvalidRequest("only a background response can be cancelled", param="response_id")
    if not job.state.terminal:
        try:
            job = await services.jobs.cancel(job.id, tenant=caller.tenant)
        except Conflict:
            job = await services.jobs.get(job.id, tenant=caller.tenant)
    return render_response(job)


@router.delete("/responses/{response_id}")
async def delete_response(
    response_id: str, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    job = await _stored(services, caller, response_id)
    try:
        await services.jobs.delete(job.id, tenant=caller.tenant)
    except NotFound:
        raise schemas.not_found(response_id) from None
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    caller: CallerDep,
    services: ServicesDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    job = await _stored(services, caller, response_id)
    items = Record.of(job).items
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidRequest(f"after: no input item {after!r} in this response", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


async def _stored(services: Services, caller: ApiKey, rid: str, param: str | None = None) -> Job:
    """The caller's stored response ``rid``; NotFound for any other id."""
    try:
        job = await services.jobs.get(schemas.job_id_of(rid), tenant=caller.tenant)
    except NotFound:
        raise schemas.not_found(rid, param) from None
    if job.origin != ORIGIN or not Record.of(job).store:
        raise schemas.not_found(rid, param)
    return job


async def _sse(
    services: Services, transcript: Transcript, *, after: int | None, owned: bool
) -> AsyncIterator[str]:
    """The events as server-sent events. An ``owned`` response (not in the background)
    is cancelled when its client leaves before it ended."""
    ended = False
    last = after if after is not None else -1
    try:
        async for event in replay(transcript, after=after):
            last = event["sequence_number"]
            yield f"event: {event['type']}\ndata: {_dumps(event)}\n\n"
        ended = True
        await _forget_unstored(services, transcript.job)
    except InferqError as exc:
        ended = True
        shown = public(exc)
        body = {"type": "error", "code": shown.code, "message": shown.message,
                "param": shown.param, "sequence_number": last + 1}  # fmt: skip
        yield f"event: error\ndata: {_dumps(body)}\n\n"
    finally:
        if owned and not ended:
            abandon(services.jobs, transcript.job)


async def _forget_unstored(services: Services, job: Job) -> None:
    """Remove a response asked not to be stored, once its client has its answer."""
    if not Record.of(job).store:
        with contextlib.suppress(NotFound):
            await services.jobs.delete(job.id, tenant=job.tenant)


def _dumps(data: dict[str, Any]) -> str:
    return jsontext.dumps(data)
