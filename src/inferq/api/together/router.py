"""Together's queue endpoints. Handlers translate and delegate; no logic here."""

from __future__ import annotations

from typing import Any

from fastapi import Query
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse

from inferq.api.body import JsonAnswer, caller_and_body, documented
from inferq.api.chat import parse_chat_body
from inferq.api.deps import CallerDep, ServicesDep, get_services
from inferq.api.routing import Router
from inferq.api.together.schemas import QueueCancelRequest, QueueClearRequest, QueueJobRequest
from inferq.api.together.translate import STATUS, error_body, render_status
from inferq.core.errors import Conflict, NotFound
from inferq.core.models import Job
from inferq.core.states import ServiceClass
from inferq.core.work import PayloadRequest, Request
from inferq.engines.remote import takes_payload

router = Router(prefix="/v1/queue", tags=["together"])


# the body and the key are read here (inferq.api.body), and the answer is built here,
# not by FastAPI's serialisation (a validation and an encoding of one string per
# submit); the schema still says what each holds. The services are fetched here, not as
# a dependency: solving one costs each submit about 12 µs.
@router.post("/submit", response_model=dict[str, Any], openapi_extra=documented(QueueJobRequest))
async def submit(http: HttpRequest) -> JSONResponse:
    caller, body = await caller_and_body(http, QueueJobRequest)
    services = await get_services(http)
    request: Request
    if takes_payload(services.registry, body.model):
        request = PayloadRequest(body.payload)  # a node's handler: passed unchanged
    else:
        request = parse_chat_body(body.payload, prefix="payload").to_request()
    job = await services.jobs.submit(
        tenant=caller.tenant,
        model=body.model,
        request=request,
        origin="together",
        service_class=ServiceClass.ASYNC,
        priority=body.priority,
        info=body.info,
        inputs=body.payload,
    )
    return JsonAnswer({"requestId": job.id})


async def _job(services: ServicesDep, caller: CallerDep, request_id: str, model: str) -> Job:
    job = await services.jobs.get(request_id, tenant=caller.tenant)
    if job.model != model:
        raise NotFound(f"job {request_id} not found for model {model}", param="request_id")
    return job


@router.get("/status")
async def status(
    caller: CallerDep,
    services: ServicesDep,
    request_id: str = Query(min_length=1),
    model: str = Query(min_length=1),
) -> dict[str, Any]:
    return render_status(await _job(services, caller, request_id, model))


@router.post("/cancel", response_model=None)
async def cancel(
    body: QueueCancelRequest, caller: CallerDep, services: ServicesDep
) -> dict[str, Any] | JSONResponse:
    job = await _job(services, caller, body.request_id, body.model)
    try:
        cancelled = await services.jobs.cancel(job.id, tenant=caller.tenant)
    except Conflict as exc:
        current = await services.jobs.get(job.id, tenant=caller.tenant)
        content = {"status": STATUS[current.state], **error_body(exc, 409)}
        return JSONResponse(content, status_code=409, headers={"x-should-retry": "false"})
    return {"status": STATUS[cancelled.state]}


@router.get("/metrics")
async def metrics(
    caller: CallerDep, services: ServicesDep, model: str = Query(min_length=1)
) -> dict[str, int]:
    counts = await services.jobs.metrics(tenant=caller.tenant, model=model)
    return {
        "messages_running": counts.running,
        "messages_waiting": counts.waiting,
        "total_jobs": counts.total,
    }


@router.post("/clear")
async def clear(
    body: QueueClearRequest, caller: CallerDep, services: ServicesDep
) -> dict[str, int]:
    return {"canceled_count": await services.jobs.clear(tenant=caller.tenant, model=body.model)}
