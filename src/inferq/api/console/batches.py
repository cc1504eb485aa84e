"""The console's batches and document workflow jobs: progress, cancel, downloads."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from fastapi import Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from inferq.api.console.auth import ViewerDep, filter_text, form_of, listing_filters
from inferq.api.console.render import PREFIX, ConsoleRoute, page, secure
from inferq.api.console.session import Viewer
from inferq.api.console.views import Progress, batch_progress, is_workflow, workflow_progress
from inferq.api.deps import Services, ServicesDep
from inferq.api.routing import Router
from inferq.core.errors import NotFound
from inferq.core.files import CONTENT, file_names
from inferq.core.models import Batch
from inferq.core.states import TERMINAL_STATES, JobState
from inferq.core.workflow_meta import SUCCESS, files_of, meta_of, nodes_of

router = Router(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

#: batches a listing shows
LISTED = 50
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class Download:
    label: str
    url: str
    size: int | None = None


@dataclass(frozen=True, slots=True)
class BatchView:
    batch: Batch
    workflow: bool
    progress: Progress
    cancellable: bool
    downloads: tuple[Download, ...] = ()
    #: why files of a workflow job failed, or a batch's invalid lines
    problems: tuple[str, ...] = ()


async def _view(services: Services, batch: Batch, *, detail: bool) -> BatchView:
    now = services.jobs.clock()
    workflow = is_workflow(batch)
    if workflow:
        progress = workflow_progress(batch, now)
    else:
        progress = batch_progress(batch, await services.batches.counts(batch), now)
    cancellable = batch.state in (JobState.VALIDATING, JobState.QUEUED, JobState.RUNNING)
    if not detail:
        return BatchView(batch=batch, workflow=workflow, progress=progress, cancellable=cancellable)
    downloads = _workflow_downloads(batch) if workflow else await _batch_downloads(services, batch)
    return BatchView(
        batch=batch,
        workflow=workflow,
        progress=progress,
        cancellable=cancellable,
        downloads=downloads,
        problems=_problems(batch),
    )


def _url(batch: Batch, *parts: str) -> str:
    return "/".join(
        [PREFIX, "batches", quote(batch.id, safe=""), *(quote(p, safe="") for p in parts)]
    )


async def _batch_downloads(services: Services, batch: Batch) -> tuple[Download, ...]:
    found = []
    for which, record_id in (("output", batch.output_file_id), ("errors", batch.error_file_id)):
        if record_id is None:
            continue
        record = await services.files.find(record_id, tenant=batch.tenant)
        if record is None:
            continue
        sizes = record.meta.get("files") or {}
        for name in file_names(record):
            label = f"{which}: {record.filename}" if name == CONTENT else f"{which}: {name}"
            size = record.bytes if name == CONTENT else sizes.get(name)
            found.append(Download(label, _url(batch, "files", record_id, name), size))
    return tuple(found)


def _workflow_downloads(job: Batch) -> tuple[Download, ...]:
    meta = meta_of(job)
    nodes = nodes_of(job)
    found = []
    if nodes:
        last = nodes[-1].id
        for file in files_of(job):
            if meta["tasks"].get(file["id"], {}).get(last) == SUCCESS:
                found.append(
                    Download(f"output: {file['name']}", _url(job, "documents", file["id"]))
                )
    if meta.get("errors"):
        found.append(Download("errors (JSON)", _url(job, "errors")))
    return tuple(found)


def _problems(batch: Batch) -> tuple[str, ...]:
    problems = []
    if batch.error is not None:
        problems.append(f"{batch.error.code}: {batch.error.message}")
    for item in (batch.errors or [])[:20]:
        where = f"line {item.get('line')}: " if item.get("line") is not None else ""
        problems.append(f"{where}{item.get('message', '')}")
    if is_workflow(batch):
        names = {f["id"]: f["name"] for f in files_of(batch)}
        for file_id, why in list(meta_of(batch).get("errors", {}).items())[:20]:
            problems.append(f"{names.get(file_id, file_id)}: {why}")
    return tuple(problems)


async def _batch(services: Services, viewer: Viewer, batch_id: str) -> Batch:
    """The batch or workflow job, when the viewer may see it (404 otherwise)."""
    return await services.batches.get(batch_id, tenant=viewer.scope)


@router.get("/batches")
async def batches(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    state: str | None = None,
    tenant: str | None = None,
    after: str | None = None,
) -> Response:
    """The newest batches and workflow jobs; ``after``: the page older than that one."""
    asked = listing_filters(viewer, state=state, tenant=tenant)
    found = await services.batches.list(
        tenant=asked.tenant,
        dialect=None,
        limit=LISTED + 1,
        after=filter_text(after, "after"),
        states=asked.states,
    )
    views = [await _view(services, batch, detail=False) for batch in found[:LISTED]]
    older = None
    if len(found) > LISTED:
        query = {**{k: v for k, v in asked.shown.items() if v}, "after": views[-1].batch.id}
        older = f"{PREFIX}/batches?{urlencode(query)}"
    context = {
        "viewer": viewer,
        "nav": "batches",
        "batches": views,
        "filters": asked.shown,
        "listed": LISTED,
        "older": older,
        "states": [s.value for s in JobState],
        "final": all(v.batch.state in TERMINAL_STATES for v in views),
    }
    return page(request, "batches.html", context, live="_batches.html")


@router.get("/batches/{batch_id}")
async def batch_detail(
    request: Request, batch_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    batch = await _batch(services, viewer, batch_id)
    context = {
        "viewer": viewer,
        "nav": "batches",
        "view": await _view(services, batch, detail=True),
    }
    return page(request, "batch.html", context, live="_batch.html")


@router.post("/batches/{batch_id}/cancel")
async def batch_cancel(
    request: Request, batch_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    await form_of(request, viewer)
    batch = await _batch(services, viewer, batch_id)
    if is_workflow(batch):
        await services.workflows.cancel(batch.id, tenant=batch.tenant)
    else:
        await services.batches.cancel(batch.id, tenant=batch.tenant)
    return secure(RedirectResponse(_url(batch), status_code=303))


def _attachment(chunks: AsyncIterator[bytes], filename: str, media_type: str) -> Response:
    safe = _UNSAFE.sub("_", filename)[:200] or "download"
    response = StreamingResponse(chunks, media_type=media_type)
    response.headers["content-disposition"] = f'attachment; filename="{safe}"'
    return secure(response)


async def _first(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks, the first one read before the answer starts (a missing blob is a 404,
    not a broken download)."""
    first = await anext(chunks, b"")

    async def rest() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return rest()


@router.get("/batches/{batch_id}/files/{record_id}/{name}")
async def batch_file(
    batch_id: str, record_id: str, name: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    batch = await _batch(services, viewer, batch_id)
    if record_id not in (batch.output_file_id, batch.error_file_id):
        raise NotFound(f"batch {batch.id} has no file {record_id}")
    record = await services.files.find(record_id, tenant=batch.tenant)
    if record is None or name not in file_names(record):
        raise NotFound(f"batch {batch.id} has no file {record_id}/{name}")
    filename = record.filename if name == CONTENT else f"{batch.id}_{name}"
    chunks = await _first(services.files.content(record, name))
    return _attachment(chunks, filename, "application/jsonl")


@router.get("/batches/{batch_id}/documents/{file_id}")
async def workflow_output(
    batch_id: str, file_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    job = await _batch(services, viewer, batch_id)
    if not is_workflow(job):
        raise NotFound(f"{job.id} is not a workflow job")
    name = next((f["name"] for f in files_of(job) if f["id"] == file_id), file_id)
    chunks = await _first(services.workflows.output(job, file_id=file_id, node_id=None))
    return _attachment(chunks, f"{name}.json", "application/json")


@router.get("/batches/{batch_id}/errors")
async def workflow_errors(batch_id: str, viewer: ViewerDep, services: ServicesDep) -> Response:
    job = await _batch(services, viewer, batch_id)
    if not is_workflow(job):
        raise NotFound(f"{job.id} is not a workflow job")
    body = json.dumps(meta_of(job).get("errors", {}), indent=2, ensure_ascii=False).encode()

    async def once() -> AsyncIterator[bytes]:
        yield body

    return _attachment(once(), f"{job.id}_errors.json", "application/json")
