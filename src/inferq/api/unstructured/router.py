"""Unstructured's jobs and templates endpoints. Handlers translate and delegate to
:class:`~inferq.core.workflows.WorkflowService`.

``POST /api/v1/jobs/`` reads its multipart body itself: ``request_data`` (JSON
text with ``template_id`` or ``job_nodes``) and one ``input_files`` part per
file, each read up to the per-file limit. Everything is checked before anything
is stored.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator

from inferq.api.deps import CallerDep, ServicesDep
from inferq.api.multipart import MultipartReader, form_body
from inferq.api.routing import Router
from inferq.api.unstructured.catalogue import TEMPLATES
from inferq.api.unstructured.translate import (
    STATUS_FILTER,
    render_details,
    render_failed_files,
    render_job,
    render_template,
    templates,
)
from inferq.core import inputs
from inferq.core.errors import InvalidRequest, NotFound
from inferq.core.workflows import InputFile

router = Router(prefix="/api/v1", tags=["unstructured"])

#: the most bytes of ``request_data``
MAX_REQUEST_DATA = 256 * 1024

_CREATE_FORM = form_body(
    {
        "request_data": {"type": "string"},
        "input_files": {"type": "array", "items": {"type": "string", "format": "binary"}},
    },
    required=["request_data"],
)


@router.post("/jobs/", openapi_extra=_CREATE_FORM)
async def create_job(request: Request, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    workflows = services.workflows
    max_bytes = workflows.limits.max_file_bytes
    request_data: str | None = None
    files: list[InputFile] = []
    reader = MultipartReader(request.stream(), request.headers.get("content-type"))
    async for part in reader:
        if part.name == "request_data" and part.filename is None:
            request_data = await part.text(limit=MAX_REQUEST_DATA)
        elif part.name in ("input_files", "input_files[]"):  # the SDK sends the latter
            if len(files) >= workflows.limits.max_files:
                raise InvalidRequest(
                    f"input_files: a job takes at most {workflows.limits.max_files} files",
                    param="input_files",
                )
            name = part.filename or f"file-{len(files) + 1}"
            data = bytearray()
            async for chunk in part.chunks():
                data += chunk
                if len(data) > max_bytes:
                    raise InvalidRequest(
                        f"input file {name!r} is larger than the limit of {max_bytes} bytes",
                        param=f"input_files.{len(files)}",
                    )
            files.append(InputFile(name=name, data=bytes(data), content_type=part.content_type))
    if request_data is None:
        raise InvalidRequest("request_data: field required", param="request_data")
    body = inputs.loads(request_data, what="request_data", param="request_data")
    if not isinstance(body, dict):
        raise InvalidRequest("request_data: must be a JSON object", param="request_data")
    template_id, job_nodes = body.get("template_id"), body.get("job_nodes")
    if template_id is not None and not isinstance(template_id, str):
        raise InvalidRequest(
            "request_data.template_id: must be a string", param="request_data.template_id"
        )
    if job_nodes is not None and not isinstance(job_nodes, list):
        raise InvalidRequest(
            "request_data.job_nodes: must be a list of nodes", param="request_data.job_nodes"
        )
    unknown = set(body) - {"template_id", "job_nodes"}
    if unknown:
        raise InvalidRequest(
            f"request_data: unknown field(s) {', '.join(sorted(unknown))}", param="request_data"
        )
    job = await workflows.create(
        tenant=caller.tenant, template_id=template_id, job_nodes=job_nodes, files=files
    )
    return render_job(job)


def _status_filter(status: str) -> str:
    """A ``status`` query parameter that :data:`STATUS_FILTER` knows, as its key. Checked
    as the parameter is read, so a 422 locates it in the query."""
    key = status.strip().lower()
    if key not in STATUS_FILTER:
        raise ValueError(
            f"{status!r} is not a job status; statuses: SCHEDULED, IN_PROGRESS, "
            "COMPLETED, STOPPED, FAILED (either case)"
        )
    return key


@router.get("/jobs/")
async def list_jobs(
    caller: CallerDep,
    services: ServicesDep,
    workflow_id: str | None = None,
    status: Annotated[str, AfterValidator(_status_filter)] | None = None,
) -> list[dict[str, Any]]:
    states = None if status is None else STATUS_FILTER[status]
    jobs = await services.workflows.list(
        tenant=caller.tenant, states=states, workflow_id=workflow_id
    )
    return [render_job(j) for j in jobs]


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    return render_job(await services.workflows.get(job_id, tenant=caller.tenant))


@router.get("/jobs/{job_id}/details")
async def get_job_details(job_id: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    return render_details(await services.workflows.get(job_id, tenant=caller.tenant))


@router.get("/jobs/{job_id}/failed-files")
async def get_job_failed_files(
    job_id: str, caller: CallerDep, services: ServicesDep
) -> dict[str, Any]:
    job = await services.workflows.get(job_id, tenant=caller.tenant)
    return render_failed_files(job)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    job = await services.workflows.cancel(job_id, tenant=caller.tenant)
    return {"id": job.id, "status": "cancelled", "message": "Job successfully cancelled."}


@router.get("/jobs/{job_id}/download")
async def download_job_output(
    job_id: str,
    caller: CallerDep,
    services: ServicesDep,
    file_id: Annotated[str, Query()],
    node_id: str | None = None,
) -> StreamingResponse:
    workflows = services.workflows
    job = await workflows.get(job_id, tenant=caller.tenant)
    body = workflows.output(job, file_id=file_id, node_id=node_id)
    return StreamingResponse(body, media_type="application/json")


@router.get("/templates/")
async def list_templates(caller: CallerDep) -> list[dict[str, Any]]:
    return templates()


@router.get("/templates/{template_id}")
async def get_template(template_id: str, caller: CallerDep) -> dict[str, Any]:
    template = TEMPLATES.get(template_id)
    if template is None:
        raise NotFound(f"Template {template_id} not found", param="template_id")
    return render_template(template, nodes=True)
