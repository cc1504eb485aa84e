"""Infera's endpoints. Handlers translate and delegate; no logic here."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from inferq.api.body import JsonAnswer, caller_and_body, documented
from inferq.api.chat import render_completion
from inferq.api.deps import CallerDep, Services, ServicesDep, get_services
from inferq.api.infera.schemas import ChatCompletionsRequest, JobId, JobRequest
from inferq.api.infera.translate import render_completion_time, render_result
from inferq.api.routing import Router
from inferq.api.sync import answer_when_finished, watched
from inferq.core.errors import InvalidRequest
from inferq.core.ids import new_uuid
from inferq.core.models import ApiKey, Job
from inferq.core.states import ServiceClass
from inferq.core.work import ChatRequest

router = Router(tags=["infera"])


def _renamed(exc: InvalidRequest, names: dict[str, str]) -> InvalidRequest:
    """The same error, naming Infera's field instead of the core's."""
    param = names.get(exc.param or "", exc.param)
    message = exc.message
    if exc.param and param != exc.param:
        message = message.replace(exc.param, param or "")
    return InvalidRequest(message, param=param)


async def _submit(
    services: Services,
    caller: ApiKey,
    body: JobRequest | ChatCompletionsRequest,
    *,
    max_tokens: int | None,
    service_class: ServiceClass,
    timeout: float | None = None,
    job_id: str | None = None,
) -> Job:
    """Queue an Infera chat request as a job; under ``job_id``, a sync one whose events
    are watched already (:func:`inferq.api.sync.watched`), which may start at once. A job
    queued to be fetched later gets a version 4 UUID, the kind Infera gives (its paths
    take no other; here they take inferq's version 7 ids too, :data:`JobId`)."""
    chat = ChatRequest(
        messages=tuple(m.to_core() for m in body.messages),
        max_tokens=max_tokens,
        temperature=body.temperature,
    )
    return await services.jobs.submit(
        tenant=caller.tenant,
        model=body.model,
        request=chat,
        origin="infera",
        service_class=service_class,
        timeout=timeout,
        job_id=job_id or new_uuid(),
        start_now=job_id is not None,
    )


# the body and the key are read here (inferq.api.body), and the answer built here, as
# Together's submit does
@router.post("/submit_job", response_model=dict[str, str], openapi_extra=documented(JobRequest))
async def submit_job(http: Request) -> JSONResponse:
    caller, body = await caller_and_body(http, JobRequest)
    services = await get_services(http)
    try:
        job = await _submit(
            services,
            caller,
            body,
            max_tokens=body.max_output or None,
            service_class=ServiceClass.ASYNC,
        )
    except InvalidRequest as exc:
        raise _renamed(exc, {"max_tokens": "max_output"}) from exc
    return JsonAnswer({"job_id": job.id})


@router.get("/get_result/{job_id}")
async def get_result(job_id: JobId, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    return render_result(await services.jobs.get(str(job_id), tenant=caller.tenant))


@router.get("/get_completion_time/{job_id}")
async def get_completion_time(
    job_id: JobId, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    return render_completion_time(await services.jobs.get(str(job_id), tenant=caller.tenant))


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionsRequest, request: Request, caller: CallerDep, services: ServicesDep
) -> dict[str, Any] | Response:
    timeout = float(body.request_timeout_time or services.settings.sync_timeout)
    job = await watched(
        services.jobs,
        lambda job_id: _submit(
            services,
            caller,
            body,
            max_tokens=body.max_tokens,
            service_class=ServiceClass.INTERACTIVE,
            timeout=timeout,
            job_id=job_id,
        ),
        stream=False,
    )
    return await answer_when_finished(request, services.jobs, job, render_completion)


@router.get("/available_models")
async def available_models(caller: CallerDep, services: ServicesDep) -> list[str]:
    return services.registry.names()
