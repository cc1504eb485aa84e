"""Core jobs and errors in Infera's shapes (FastAPI's ``{"detail": ...}`` errors)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.responses import JSONResponse

from inferq.core.errors import InferqError, InvalidRequest
from inferq.core.models import Job
from inferq.core.states import JobState
from inferq.core.work import ChatResult

#: what Infera's clients poll for while a job is not finished
PROCESSING = "processing"
STATUS = {
    JobState.SUCCEEDED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
    JobState.EXPIRED: "expired",
}


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def render_result(job: Job) -> dict[str, Any]:
    if not job.state.terminal:
        return {"status": PROCESSING}
    status = STATUS[job.state]
    if job.state is JobState.SUCCEEDED and isinstance(job.result, ChatResult):
        return {
            "status": status,
            "result": {
                "model": job.model,
                "created_at": iso(job.finished_at),
                "message": {"role": "assistant", "content": job.result.text},
                "done": True,
                "done_reason": job.result.finish_reason,
                "prompt_eval_count": job.usage.prompt_tokens,
                "eval_count": job.usage.completion_tokens,
            },
        }
    error = job.error.to_dict() if job.error else {"code": status, "message": status}
    return {"status": status, "error": error}


def render_completion_time(job: Job) -> dict[str, Any]:
    done = job.state.terminal and job.finished_at is not None
    return {
        "job_id": job.id,
        "status": STATUS.get(job.state, PROCESSING),
        "created_at": iso(job.created_at),
        "done_at": iso(job.finished_at) if done else None,
        "completion_time": round(job.finished_at - job.created_at, 3)
        if done and job.finished_at is not None
        else None,
    }


def render_error(exc: InferqError, status: int) -> JSONResponse:
    if isinstance(exc, InvalidRequest):
        # Field problems use FastAPI's validation shape, as Infera documents.
        # "body" is the body as a whole (the input guard says so when it cannot name a
        # field): FastAPI locates that at ["body"]
        inner = exc.param.split(".") if exc.param and exc.param != "body" else []
        loc = ["body", *inner]
        detail = [{"loc": loc, "msg": exc.message, "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)
    return JSONResponse({"detail": exc.message}, status_code=status)
