"""Conversion between domain objects and SQL rows, shared by the SQL executors and store."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any, Protocol

from inferq.core import jsontext
from inferq.core.models import ApiKey, Batch, BatchCounts, FileRecord, Job, JobError
from inferq.core.ports import BatchFilter, FileFilter, RowFilter
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import Usage, request_from_dict, request_to_dict, result_from_dict


class Row(Protocol):
    """A database row read by column name (sqlite3.Row, a dict, a driver's record)."""

    def __getitem__(self, key: str, /) -> Any: ...


#: how every stored value is written (:mod:`inferq.core.jsontext`)
dumps = jsontext.dumps


def job_params(job: Job) -> dict[str, Any]:
    """Parameters of ``insert_job`` (``insert_rows`` and ``insert_jobs`` take many of them)."""
    return {
        "id": job.id,
        "tenant": job.tenant,
        "model": job.model,
        "origin": job.origin,
        "service_class": int(job.service_class),
        "priority": job.priority,
        "state": job.state.value,
        "request": dumps(request_to_dict(job.request)),
        "info": dumps(job.info) if job.info else "{}",
        "inputs": dumps(job.inputs) if job.inputs is not None else None,
        "max_attempts": job.max_attempts,
        "created_at": job.created_at,
        "deadline_at": job.deadline_at,
        "batch_id": job.batch_id,
        "custom_id": job.custom_id,
        "batch_line": job.batch_line,
    }


def _fields(obj: object, *names: str) -> dict[str, Any]:
    """The named attributes of ``obj``: the parameters stored as they are."""
    return {name: getattr(obj, name) for name in names}


def _columns(row: Row, *names: str) -> dict[str, Any]:
    """The named columns of ``row``: the fields read back as they are."""
    return {name: row[name] for name in names}


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
        request=request_from_dict(_json(row["request"])),
        info=_json(row["info"]) or {},
        inputs=_json(row["inputs"]),
        result=result_from_dict(result) if result else None,
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
        batch_id=row["batch_id"],
        custom_id=row["custom_id"],
        batch_line=row["batch_line"],
    )


def key_params(key: ApiKey, key_hash: str) -> dict[str, Any]:
    plain = _fields(key, "id", "name", "tenant", "prefix", "admin", "created_at", "rpm", "tpm")
    return {**plain, "key_hash": key_hash}


def row_to_key(row: Row) -> ApiKey:
    plain = _columns(row, "id", "name", "tenant", "prefix", "created_at", "revoked_at")
    return ApiKey(**plain, admin=bool(row["admin"]), rpm=row["rpm"], tpm=row["tpm"])


# -- files ---------------------------------------------------------------------------


def file_params(record: FileRecord) -> dict[str, Any]:
    """Parameters of the ``insert_file`` and ``update_file`` queries."""
    plain = _fields(record, "tenant", "id", "kind", "purpose", "filename", "bytes", "status")
    return {**plain, "meta": dumps(record.meta), "created_at": record.created_at}


def row_to_file(row: Row) -> FileRecord:
    plain = _columns(row, "id", "tenant", "kind", "purpose", "filename", "bytes", "status")
    return FileRecord(
        **plain, created_at=row["created_at"], meta=_json(row["meta"]) or {}, seq=row["seq"]
    )


# -- batches -------------------------------------------------------------------------

#: Batch fields stored as they are, in columns of their own
_BATCH_PLAIN = (
    "tenant", "id", "dialect", "idempotency_key", "owner", "lease_expires_at", "created_at",
)  # fmt: skip
#: Batch fields stored in columns of their own; every other field goes in ``data``
_BATCH_COLUMNS = frozenset({*_BATCH_PLAIN, "state", "seq"})


def batch_params(batch: Batch) -> dict[str, Any]:
    """Parameters of the ``insert_batch`` and ``update_batch`` queries."""
    data: dict[str, Any] = {}
    for f in dataclasses.fields(Batch):
        if f.name in _BATCH_COLUMNS:
            continue
        value = getattr(batch, f.name)
        if isinstance(value, JobState):
            value = value.value
        elif isinstance(value, JobError | BatchCounts):
            value = value.to_dict()
        data[f.name] = value
    plain = _fields(batch, *_BATCH_PLAIN)
    return {**plain, "state": batch.state.value, "data": dumps(data)}


def row_to_batch(row: Row) -> Batch:
    data = dict(_json(row["data"]))
    data.setdefault("row_ids", 1)  # stored before batches said how their rows' ids are made
    final_state = data.pop("final_state", None)
    error = data.pop("error", None)
    counts = data.pop("counts", None)
    return Batch(
        **_columns(row, *_BATCH_PLAIN),
        state=JobState(row["state"]),
        seq=row["seq"],
        final_state=JobState(final_state) if final_state is not None else None,
        error=JobError(**error) if error is not None else None,
        counts=BatchCounts.from_dict(counts) if counts is not None else None,
        **data,
    )


#: the BatchCounts field each row state is counted in (MemoryStore counts the same way)
COUNTED = {
    JobState.VALIDATING: "waiting",
    JobState.QUEUED: "waiting",
    JobState.RUNNING: "running",
    JobState.FINALIZING: "running",
    JobState.CANCELLING: "running",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
    JobState.EXPIRED: "cancelled",
}


def fold_counts(groups: Iterable[Row]) -> BatchCounts:
    """BatchCounts from the ``batch_counts`` query: one row per state, with ``n`` and
    the token sums; tokens count only for finished rows."""
    counts = {f.name: 0 for f in dataclasses.fields(BatchCounts)}
    for group in groups:
        state = JobState(group["state"])
        counts["total"] += group["n"]
        counts[COUNTED[state]] += group["n"]
        if state.terminal:
            for name in ("prompt_tokens", "completion_tokens", "cached_tokens"):
                counts[name] += int(group[name] or 0)
    return BatchCounts(**counts)


def filter_params(flt: FileFilter | BatchFilter | RowFilter) -> dict[str, Any]:
    """A listing's filter as the parameters of its query: one a field, under the field's
    name (``states`` as the sorted state names, None for any state)."""
    params = {f.name: getattr(flt, f.name) for f in dataclasses.fields(flt)}
    if "states" in params and params["states"] is not None:
        params["states"] = sorted(s.value for s in params["states"])
    return params
