"""Core batches, datasets and errors in Fireworks' shapes.

Fireworks is a gRPC service behind a REST gateway: resource names like
``accounts/{a}/datasets/{id}``, RFC 3339 times, ``JOB_STATE_``-prefixed states,
google.rpc status codes (numeric in error bodies, names in a job's ``status``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import JSONResponse
from pydantic.alias_generators import to_camel

from inferq.api.chat import parse_chat_body
from inferq.api.fireworks.schemas import InferenceParameters
from inferq.core import inputs
from inferq.core.errors import ClientError, Conflict, InferqError, InvalidRequest
from inferq.core.models import Batch, BatchCounts, FileRecord
from inferq.core.states import JobState


class AlreadyExists(Conflict):
    """The resource already exists."""

    code = "already_exists"


class Forbidden(ClientError):
    """The signed URL does not allow this request."""

    code = "permission_denied"


#: the statuses of Fireworks' own errors (see :data:`inferq.api.errors.STATUS`)
STATUSES: Mapping[type[InferqError], int] = {Forbidden: 403}


#: google.rpc.Code numbers
OK, CANCELLED, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS = 0, 1, 3, 4, 5, 6
PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, UNIMPLEMENTED = 7, 8, 9, 12
INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 13, 14, 16

_GRPC_CODES = {
    400: INVALID_ARGUMENT,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: NOT_FOUND,
    405: UNIMPLEMENTED,
    408: DEADLINE_EXCEEDED,
    413: RESOURCE_EXHAUSTED,
    429: RESOURCE_EXHAUSTED,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}


def grpc_code(exc: InferqError, status: int) -> int:
    if isinstance(exc, Conflict):
        exists = isinstance(exc, AlreadyExists) or "already exists" in exc.message
        return ALREADY_EXISTS if exists else FAILED_PRECONDITION
    return _GRPC_CODES.get(status, INTERNAL)


def render_error(exc: InferqError, status: int) -> JSONResponse:
    """A google.rpc.Status body, as Fireworks' gateway answers errors."""
    body = {"code": grpc_code(exc, status), "message": exc.message, "details": []}
    return JSONResponse(body, status_code=status)


# -- names ---------------------------------------------------------------------------

#: Fireworks resource ids: lowercase letters, digits and hyphens, at most 63
_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
#: models are named more loosely (inferq's own names, with dots)
_MODEL = re.compile(r"[A-Za-z0-9._-]{1,200}")


def check_id(value: str, *, what: str, param: str) -> str:
    if not _ID.fullmatch(value):
        raise InvalidRequest(
            f"{param}: {what} id {value!r} must be 1-63 lowercase letters, digits or "
            "hyphens, starting and ending with a letter or digit",
            param=param,
        )
    return value


def resource_id(value: str, collection: str, *, param: str) -> str:
    """The id in ``accounts/{a}/{collection}/{id}``, or ``value`` when it is bare."""
    parts = value.split("/")
    if len(parts) == 1:
        return check_id(value, what=collection.rstrip("s"), param=param)
    if len(parts) == 4 and parts[0] == "accounts" and parts[2] == collection and parts[1]:
        return check_id(parts[3], what=collection.rstrip("s"), param=param)
    raise InvalidRequest(
        f"{param}: {value!r} is not a {collection} name (accounts/ACCOUNT/{collection}/ID)",
        param=param,
    )


def model_name(value: str) -> str:
    """inferq's model for ``accounts/<account>/models/<name>`` or a bare ``<name>``."""
    parts = value.split("/")
    named = len(parts) == 4 and parts[0] == "accounts" and parts[2] == "models" and parts[1]
    if not (len(parts) == 1 or named) or not _MODEL.fullmatch(parts[-1]):
        raise InvalidRequest(
            f"model: {value!r} is not a model name (accounts/ACCOUNT/models/NAME or NAME)",
            param="model",
        )
    return parts[-1]


def full_model(value: str) -> str:
    return value if "/" in value else f"accounts/fireworks/models/{value}"


def dataset_name(account: str, dataset_id: str) -> str:
    return f"accounts/{account}/datasets/{dataset_id}"


def job_name(account: str, job_id: str) -> str:
    return f"accounts/{account}/batchInferenceJobs/{job_id}"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# -- datasets --------------------------------------------------------------------------

FORMATS = frozenset({"FORMAT_UNSPECIFIED", "CHAT", "COMPLETION", "RL"})


def render_dataset(record: FileRecord, account: str) -> dict[str, Any]:
    meta = record.meta
    body: dict[str, Any] = {
        "name": dataset_name(account, record.id),
        "displayName": meta.get("displayName") or "",
        "createTime": iso(record.created_at),
        "updateTime": iso(meta.get("updatedAt") or record.created_at),
        "createdBy": meta.get("createdBy") or "",
        "state": "UPLOADING" if record.status == "uploading" else "READY",
        "status": {"code": "OK", "message": ""},
        "exampleCount": str(meta.get("exampleCount") or "0"),
        "format": meta.get("format") or "FORMAT_UNSPECIFIED",
    }
    if "userUploaded" in meta:
        body["userUploaded"] = meta["userUploaded"]
    if meta.get("sourceJobName"):
        body["sourceJobName"] = meta["sourceJobName"]
    return body


# -- batch inference jobs ----------------------------------------------------------------

JOB_STATES = {
    JobState.VALIDATING: "JOB_STATE_VALIDATING",
    JobState.QUEUED: "JOB_STATE_PENDING",
    JobState.RUNNING: "JOB_STATE_RUNNING",
    JobState.FINALIZING: "JOB_STATE_WRITING_RESULTS",
    JobState.SUCCEEDED: "JOB_STATE_COMPLETED",
    JobState.FAILED: "JOB_STATE_FAILED",
    JobState.CANCELLING: "JOB_STATE_CANCELLING",
    JobState.CANCELLED: "JOB_STATE_CANCELLED",
    JobState.EXPIRED: "JOB_STATE_EXPIRED",
}
CORE_STATES = {wire: core for core, wire in JOB_STATES.items()}
PRECISIONS = frozenset(
    {
        "PRECISION_UNSPECIFIED",
        "FP16",
        "FP8",
        "FP8_MM",
        "FP8_AR",
        "FP8_MM_KV_ATTN",
        "FP8_KV",
        "FP8_MM_V2",
        "FP8_V2",
        "FP8_MM_KV_ATTN_V2",
        "NF4",
        "FP4",
        "BF16",
        "FP4_BLOCKSCALED_MM",
        "FP4_MX_MOE",
    }
)
#: jobProgress stays null until rows run
_NO_PROGRESS = frozenset({JobState.VALIDATING, JobState.QUEUED, JobState.FAILED})
_FILTER = re.compile(r'\s*state\s*=\s*(?:"([A-Z_]+)"|([A-Z_]+))\s*')


def unsupported_filter(text: str, use: str) -> InvalidRequest:
    """The error for a list filter this API does not take; ``use`` says what it takes."""
    return InvalidRequest(f"filter: {text!r} is not supported; use {use}", param="filter")


def state_filter(text: str | None) -> frozenset[JobState] | None:
    """The states an AIP-160 filter ``state=JOB_STATE_X`` (or ``"JOB_STATE_X"``) selects."""
    if not text or not text.strip():
        return None
    states: set[JobState] = set()
    for clause in re.split(r"\s+OR\s+", text.strip()):
        match = _FILTER.fullmatch(clause)
        wire = match and (match.group(1) or match.group(2))
        if not wire or wire not in CORE_STATES:
            raise unsupported_filter(
                text, "state=JOB_STATE_<STATE> (clauses may be joined with OR)"
            )
        states.add(CORE_STATES[wire])
    return frozenset(states)


def job_status(batch: Batch) -> dict[str, str]:
    if batch.state is JobState.FAILED:
        error = batch.error
        code = (
            "INVALID_ARGUMENT" if error is None or error.code == "invalid_request" else "INTERNAL"
        )
        return {"code": code, "message": error.message if error else "the job failed"}
    if batch.state in (JobState.CANCELLED, JobState.CANCELLING):
        return {"code": "CANCELLED", "message": "the job was cancelled"}
    if batch.state is JobState.EXPIRED:
        window_hours = (batch.expires_at - batch.created_at) / 3600  # its completion window
        return {
            "code": "DEADLINE_EXCEEDED",
            "message": f"the job did not finish within {window_hours:g} hours; "
            "the rows that finished are in the output dataset",
        }
    return {"code": "OK", "message": ""}


def job_progress(batch: Batch, counts: BatchCounts) -> dict[str, int] | None:
    if batch.state in _NO_PROGRESS:
        return None
    total = counts.total or batch.total
    processed = counts.succeeded + counts.failed
    return {
        "percent": (100 * counts.done // total) if total else 0,
        "epoch": 0,
        "totalInputRequests": total,
        "totalProcessedRequests": processed,
        "successfullyProcessedRequests": counts.succeeded,
        "failedRequests": counts.failed,
        "outputRows": counts.succeeded,
        "inputTokens": counts.prompt_tokens,
        "outputTokens": counts.completion_tokens,
        "cachedInputTokenCount": counts.cached_tokens,
    }


def render_job(batch: Batch, counts: BatchCounts, account: str) -> dict[str, Any]:
    meta = batch.meta
    return {
        "name": job_name(account, batch.id),
        "displayName": meta.get("displayName") or "",
        "createTime": iso(batch.created_at),
        "createdBy": meta.get("createdBy") or "",
        "updateTime": iso(batch.updated_at or batch.created_at),
        "expireTime": iso(batch.expires_at),
        "state": JOB_STATES[batch.state],
        "status": job_status(batch),
        "model": meta.get("model") or full_model(batch.model or ""),
        "inputDatasetId": dataset_name(account, batch.input_file_id),
        "outputDatasetId": dataset_name(account, meta["outputDatasetId"]),
        "inferenceParameters": meta.get("inferenceParameters") or {"extraBody": "{}"},
        "precision": meta.get("precision") or "PRECISION_UNSPECIFIED",
        "continuedFromJobName": (
            job_name(account, batch.continued_from) if batch.continued_from else ""
        ),
        "jobProgress": job_progress(batch, counts),
        "lifecycle": {
            "validatedTime": iso(batch.validated_at),
            "runStartTime": iso(batch.started_at),
            "endTime": iso(batch.finished_at),
        },
    }


#: extraBody keys a batch sets itself
_NOT_ROW_DEFAULTS = frozenset({"model", "messages", "stream", "stream_options"})


def row_defaults(params: InferenceParameters | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row defaults (chat-body keys) of a job's inferenceParameters, and their echo.

    ``extraBody`` is a JSON object in a string; the named parameters win over it.
    The defaults are checked here, so a bad value fails the create call rather
    than every row of the job.
    """
    params = params or InferenceParameters()
    if params.n is not None and params.n > 1:
        raise InvalidRequest(
            "inferenceParameters.n: only one response per request (n=1) is supported",
            param="inferenceParameters.n",
        )
    extra: Any = {}
    if params.extra_body:
        extra = inputs.loads(
            params.extra_body,
            what="inferenceParameters.extraBody",
            param="inferenceParameters.extraBody",
        )
        if not isinstance(extra, dict):
            raise InvalidRequest(
                "inferenceParameters.extraBody: must hold a JSON object",
                param="inferenceParameters.extraBody",
            )
    named = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
    }
    defaults = {k: v for k, v in extra.items() if k not in _NOT_ROW_DEFAULTS}
    defaults.update({k: v for k, v in named.items() if v is not None})
    probe = {**defaults, "messages": [{"role": "user", "content": "-"}]}
    parse_chat_body(probe, prefix="inferenceParameters")
    echo: dict[str, Any] = {
        to_camel(k): v for k, v in {**named, "n": params.n}.items() if v is not None
    }
    echo["extraBody"] = params.extra_body or "{}"
    return defaults, echo
