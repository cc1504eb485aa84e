"""Conversion between domain objects and SQL rows, shared by the SQL adapters."""

from __future__ import annotations

import json
from typing import Any, Protocol

from inferq.core.models import ApiKey, ChatRequest, ChatResult, Job, JobError, Usage
from inferq.core.states import JobState, ServiceClass


class Row(Protocol):
    """A database row read by column name (sqlite3.Row, a dict, a driver's record)."""

    def __getitem__(self, key: str, /) -> Any: ...


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def job_params(job: Job) -> dict[str, Any]:
    """Parameters of the ``insert_job`` query."""
    return {
        "id": job.id,
        "tenant": job.tenant,
        "model": job.model,
        "origin": job.origin,
        "service_class": int(job.service_class),
        "priority": job.priority,
        "state": job.state.value,
        "request": dumps(job.request.to_dict()),
        "info": dumps(job.info),
        "inputs": dumps(job.inputs) if job.inputs is not None else None,
        "max_attempts": job.max_attempts,
        "created_at": job.created_at,
        "deadline_at": job.deadline_at,
    }


def _json(value: Any) -> Any:
    if value is None or isinstance(value, dict | list):
        return value
    return json.loads(value)


def row_to_job(row: Row) -> Job:
    result = _json(row["result"])
    error = _json(row["error"])
    return Job(
        id=row["id"],
        tenant=row["tenant"],
        model=row["model"],
        origin=row["origin"],
        service_class=ServiceClass(row["service_class"]),
        priority=row["priority"],
        state=JobState(row["state"]),
        request=ChatRequest.from_dict(_json(row["request"])),
        info=_json(row["info"]) or {},
        inputs=_json(row["inputs"]),
        result=ChatResult.from_dict(result) if result else None,
        error=JobError(**error) if error else None,
        usage=Usage(
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            cached_tokens=row["cached_tokens"],
        ),
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        owner=row["owner"],
        lease_expires_at=row["lease_expires_at"],
        created_at=row["created_at"],
        claimed_at=row["claimed_at"],
        finished_at=row["finished_at"],
        deadline_at=row["deadline_at"],
        seq=row["seq"],
    )


def key_params(key: ApiKey, key_hash: str) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "tenant": key.tenant,
        "prefix": key.prefix,
        "key_hash": key_hash,
        "admin": int(key.admin),
        "created_at": key.created_at,
    }


def row_to_key(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        tenant=row["tenant"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        admin=bool(row["admin"]),
    )
