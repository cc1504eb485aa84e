"""OpenAI's batch create body and batch object, translated to and from the core Batch."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferq.api.openai.batch_format import ENDPOINTS
from inferq.api.openai.metadata import check_metadata
from inferq.core.errors import InvalidRequest
from inferq.core.models import Batch, BatchCounts
from inferq.core.states import JobState

#: the only completion window OpenAI accepts
WINDOW = "24h"
#: the longest Idempotency-Key accepted
MAX_IDEMPOTENCY_KEY = 255

#: the core state -> OpenAI's batch status (exactly OpenAI's eight)
STATUS: dict[JobState, str] = {
    JobState.VALIDATING: "validating",
    JobState.QUEUED: "in_progress",
    JobState.RUNNING: "in_progress",
    JobState.FINALIZING: "finalizing",
    JobState.SUCCEEDED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLING: "cancelling",
    JobState.CANCELLED: "cancelled",
    JobState.EXPIRED: "expired",
}


class BatchCreate(BaseModel):
    """The body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    #: ``{"anchor": "created_at", "seconds": N}``: the output and error files expire then
    output_expires_after: dict[str, Any] | None = None

    def check(self) -> None:
        """OpenAI's rules on the values, each an InvalidRequest naming its field."""
        if self.endpoint not in ENDPOINTS:
            raise InvalidRequest(
                f"endpoint: {self.endpoint!r} is not supported; use one of " + ", ".join(ENDPOINTS),
                param="endpoint",
            )
        if self.completion_window != WINDOW:
            raise InvalidRequest(
                f"completion_window: {self.completion_window!r} is not supported; "
                f"only {WINDOW!r} is",
                param="completion_window",
            )
        check_metadata(self.metadata)


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


def _errors(batch: Batch) -> dict[str, Any] | None:
    if batch.errors:
        data = [_line_error(e) for e in batch.errors]
    elif batch.error is not None:
        data = [
            {"code": batch.error.code, "message": batch.error.message, "param": None, "line": None}
        ]
    else:
        return None
    return {"object": "list", "data": data}


def _line_error(error: dict[str, Any]) -> dict[str, Any]:
    code, param = error.get("code"), error.get("param")
    if code == "not_found" and param == "model":
        # the registry names the core field; an OpenAI line holds the model in its body
        code, param = "model_not_found", "body.model"
    return {
        "code": code,
        "message": error.get("message"),
        "param": param,
        "line": error.get("line"),
    }


def render_batch(batch: Batch, counts: BatchCounts) -> dict[str, Any]:
    """OpenAI's batch object."""
    state = batch.state
    ended = batch.finished_at if state.terminal else None
    # rows that will not run count as failed once the batch ended; before, only real failures
    failed = counts.failed + counts.cancelled if state.terminal else counts.failed
    # a batch that failed validation never was in progress
    in_progress_at = None if batch.errors else batch.validated_at
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": _errors(batch),
        "input_file_id": batch.input_file_id,
        "completion_window": WINDOW,
        "status": STATUS[state],
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": int(batch.created_at),
        "in_progress_at": _ts(in_progress_at),
        "expires_at": _ts(batch.expires_at),
        "finalizing_at": _ts(batch.finalizing_at),
        "completed_at": _ts(ended if state is JobState.SUCCEEDED else None),
        "failed_at": _ts(ended if state is JobState.FAILED else None),
        "expired_at": _ts(ended if state is JobState.EXPIRED else None),
        "cancelling_at": _ts(batch.cancelling_at),
        "cancelled_at": _ts(ended if state is JobState.CANCELLED else None),
        "request_counts": {
            "total": counts.total,
            "completed": counts.succeeded,
            "failed": failed,
        },
        "metadata": batch.meta.get("metadata"),
        "model": None,
        "usage": {
            "input_tokens": counts.prompt_tokens,
            "input_tokens_details": {"cached_tokens": counts.cached_tokens},
            "output_tokens": counts.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": counts.prompt_tokens + counts.completion_tokens,
        },
    }
