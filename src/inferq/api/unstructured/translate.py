"""The Unstructured dialect's wire shapes: job records, details, errors.

Errors are FastAPI's: ``{"detail": "..."}``, and for a field of the request a
422 with ``{"detail": [{"loc", "msg", "type"}]}``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.responses import JSONResponse

from inferq.api.unstructured.catalogue import TEMPLATES, Template
from inferq.core.errors import InferqError, InvalidRequest
from inferq.core.models import Batch
from inferq.core.states import JobState
from inferq.core.workflow_meta import files_of, node_stats, nodes_of

#: JobStatus of each state
STATUS: dict[JobState, str] = {
    JobState.QUEUED: "SCHEDULED",
    JobState.RUNNING: "IN_PROGRESS",
    JobState.CANCELLING: "STOPPED",
    JobState.SUCCEEDED: "COMPLETED",
    JobState.FAILED: "FAILED",
    JobState.CANCELLED: "STOPPED",
    JobState.EXPIRED: "FAILED",
}
#: the states a ``status`` filter selects; the docs spell one of them "im progress"
STATUS_FILTER: dict[str, frozenset[JobState]] = {
    "scheduled": frozenset({JobState.QUEUED}),
    "in_progress": frozenset({JobState.RUNNING}),
    "in progress": frozenset({JobState.RUNNING}),
    "im progress": frozenset({JobState.RUNNING}),
    "completed": frozenset({JobState.SUCCEEDED}),
    "stopped": frozenset({JobState.CANCELLED, JobState.CANCELLING}),
    "failed": frozenset({JobState.FAILED, JobState.EXPIRED}),
}


def iso(ts: float) -> str:
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def runtime(job: Batch) -> str | None:
    if job.started_at is None:
        return None
    end = job.finished_at or job.updated_at or job.started_at
    return f"{max(0.0, end - job.started_at):.3f}s"


def render_job(job: Batch) -> dict[str, Any]:
    nodes = nodes_of(job)
    files = files_of(job)
    return {
        "id": job.id,
        "workflow_id": job.meta["workflow_id"],
        "workflow_name": job.meta["workflow_name"],
        "status": STATUS[job.state],
        "created_at": iso(job.created_at),
        "runtime": runtime(job),
        "input_file_ids": [f["id"] for f in files],
        "output_node_files": [
            {"node_id": n.id, "file_id": f["id"], "node_type": n.type, "node_subtype": n.subtype}
            for f in files
            for n in nodes
        ],
        "job_type": job.meta["job_type"],
    }


def render_details(job: Batch) -> dict[str, Any]:
    status = job.meta.get("processing_status") or "SCHEDULED"
    if job.state is JobState.CANCELLING:
        status = "STOPPED"
    return {
        "id": job.id,
        "processing_status": status,
        "message": job.meta.get("message"),
        "node_stats": [
            {
                "node_name": s["node"].name,
                "node_type": s["node"].type,
                "node_subtype": s["node"].subtype,
                "ready": s["ready"],
                "in_progress": s["in_progress"],
                "success": s["success"],
                "failure": s["failure"],
            }
            for s in node_stats(job)
        ],
    }


def render_failed_files(job: Batch) -> dict[str, Any]:
    names = {f["id"]: f["name"] for f in files_of(job)}
    errors: dict[str, str] = job.meta.get("errors", {})
    return {
        "failed_files": [
            {"document": names.get(file_id, file_id), "error": error}
            for file_id, error in errors.items()
        ]
    }


def render_template(template: Template, *, nodes: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": template.id,
        "name": template.name,
        "description": template.description,
        "version": template.version,
        "last_updated": template.last_updated,
    }
    if nodes:
        item["nodes"] = [n.to_dict() for n in template.nodes]
    return item


def templates() -> list[dict[str, Any]]:
    return [render_template(t, nodes=False) for t in TEMPLATES.values()]


def _loc(part: str) -> str | int:
    """One step of a dotted param as FastAPI's ``loc`` writes it: a list index as a number
    (only ASCII digits: a client's key such as "²" passes ``isdigit`` but not ``int``)."""
    return int(part) if part.isascii() and part.isdigit() and len(part) <= 18 else part


def render_error(exc: InferqError, status: int) -> JSONResponse:
    if isinstance(exc, InvalidRequest) and exc.param is not None:
        loc: list[str | int] = ["body"]
        loc += [_loc(part) for part in exc.param.split(".")]
        detail = [{"loc": loc, "msg": exc.message, "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)
    return JSONResponse({"detail": exc.message}, status_code=status)
