"""Core jobs and errors in Together's queue shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.responses import JSONResponse

from inferq.api.chat import render_completion
from inferq.api.openai.embeddings import render_embeddings
from inferq.core.errors import InferqError, NotFound
from inferq.core.models import Job
from inferq.core.states import JobState
from inferq.core.work import EmbedResult, PayloadResult

STATUS = {
    JobState.VALIDATING: "pending",
    JobState.QUEUED: "pending",
    JobState.RUNNING: "running",
    JobState.FINALIZING: "running",
    JobState.CANCELLING: "running",
    JobState.SUCCEEDED: "done",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "canceled",
    JobState.EXPIRED: "failed",
}

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def render_status(job: Job) -> dict[str, Any]:
    status = STATUS[job.state]
    info = dict(job.info)
    body: dict[str, Any] = {
        "request_id": job.id,
        "model": job.model,
        "status": status,
        "created_at": iso(job.created_at),
        "claimed_at": iso(job.claimed_at),
        "done_at": iso(job.finished_at) if status in ("done", "failed") else None,
        "inputs": job.inputs,
        "outputs": _outputs(job),
        "priority": job.priority,
        "retries": job.retries,
        "warnings": [],
    }
    if status == "failed" and job.error is not None:
        info["error"] = job.error.message
        body["error"] = {"code": job.error.code, "message": job.error.message}
    body["info"] = info
    return body


def _outputs(job: Job) -> dict[str, Any] | None:
    """A succeeded job's outputs: a chat completion, or the embeddings of a job that an
    embeddings request created (its id reaches the status route just the same)."""
    if job.state is not JobState.SUCCEEDED:
        return None
    if isinstance(job.result, PayloadResult):
        return job.result.outputs
    if isinstance(job.result, EmbedResult):
        return render_embeddings(job, job.result, "float")
    return render_completion(job)


def error_body(exc: InferqError, status: int) -> dict[str, Any]:
    return {
        "code": exc.code,
        "message": exc.message,
        "param": exc.param,
        "type": ERROR_TYPES.get(status, "server_error"),
    }


def render_error(exc: InferqError, status: int) -> JSONResponse:
    body = error_body(exc, status)
    if isinstance(exc, NotFound) and exc.param == "model":
        status = 400  # submit documents 400, not 404, for an unknown model
    return JSONResponse(body, status_code=status)
