"""Domain objects: immutable snapshots (:func:`~inferq.core.records.record`), changed
with their ``evolve`` or :func:`dataclasses.replace`: jobs, batches, files, keys and the
queue's counts. What a job asks an engine to do and what it returns are in
:mod:`inferq.core.work`.

The dialects translate their wire formats to and from these; the store persists them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from inferq.core.records import copied, record
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import Request, Result, Usage


@record
class JobError:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@record(kw_only=True)
class Job:
    """One unit of work a client submitted and a worker leases."""

    id: str
    tenant: str
    model: str
    #: the API that accepted the job ("together", "infera", "openai")
    origin: str
    service_class: ServiceClass
    priority: int
    state: JobState
    request: Request
    created_at: float
    #: client metadata (Together's ``info``); the system adds ``progress`` and ``error``
    info: dict[str, Any] = field(default_factory=dict)
    #: the request as the client sent it, for dialects that echo it back
    inputs: dict[str, Any] | None = None
    result: Result | None = None
    error: JobError | None = None
    usage: Usage = Usage()
    #: number of times a worker has claimed the job
    attempt: int = 0
    max_attempts: int = 4
    owner: str | None = None
    lease_expires_at: float | None = None
    claimed_at: float | None = None
    finished_at: float | None = None
    #: wall-clock time after which the job is cancelled (sync requests)
    deadline_at: float | None = None
    #: monotonic submission order, assigned by the store
    seq: int = 0
    #: set on the rows of a batch: the batch, the row's custom_id and its line (from 1)
    batch_id: str | None = None
    custom_id: str | None = None
    batch_line: int | None = None

    def evolve(self, **changes: Any) -> Job:
        return copied(self, changes)

    @property
    def retries(self) -> int:
        return max(0, self.attempt - 1)


@record
class Lease:
    """Proof that a worker holds a job: every fenced update carries it."""

    job_id: str
    owner: str
    attempt: int


@record
class QueueMetrics:
    running: int
    waiting: int
    total: int


@record(kw_only=True)
class ActiveCount:
    """How many unfinished jobs (of every tenant) share a model, class, state and kind:
    one row of :meth:`~inferq.core.ports.JobQueue.count_active`, read for the metrics."""

    model: str
    service_class: ServiceClass
    #: validating, queued or running
    state: JobState
    #: whether they are rows of a batch
    in_batch: bool
    count: int


@record(kw_only=True)
class ApiKey:
    id: str
    name: str
    tenant: str
    prefix: str
    created_at: float
    revoked_at: float | None = None
    admin: bool = False
    #: the key's own requests and tokens per minute (None: the server's defaults)
    rpm: int | None = None
    tpm: int | None = None


@record
class JobFilter:
    """What ``list_jobs`` selects; None means any."""

    tenant: str | None = None
    model: str | None = None
    states: frozenset[JobState] | None = None
    limit: int = 100


@record(kw_only=True)
class FileRecord:
    """An uploaded or produced file (OpenAI file) or a dataset (Fireworks).

    The bytes live in the blob store under keys derived from the tenant and id;
    a dataset may hold several named files (``meta["files"]``: name -> size).
    """

    id: str
    tenant: str
    #: "file" or "dataset"
    kind: str
    #: "batch", "batch_output", "dataset", ...
    purpose: str
    filename: str
    bytes: int
    created_at: float
    #: "uploading" until its bytes are in place, then "ready"
    status: str = "ready"
    #: dialect fields echoed back (displayName, format, exampleCount, sourceJobName ...)
    meta: dict[str, Any] = field(default_factory=dict)
    #: assigned by the store, for keyset pagination
    seq: int = 0

    def evolve(self, **changes: Any) -> FileRecord:
        return copied(self, changes)


@record
class BatchCounts:
    """How a batch's rows stand; tokens summed over its finished rows."""

    total: int = 0
    waiting: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def active(self) -> int:
        return self.waiting + self.running

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchCounts:
        return cls(**data)


@record(kw_only=True)
class Batch:
    """A file of requests run as one row job each, with its outputs written at the end."""

    id: str
    tenant: str
    #: the API that created it ("openai", "fireworks"): how its rows are parsed
    dialect: str
    #: the model every row runs on, when the batch names one (Fireworks)
    model: str | None
    #: "/v1/chat/completions" or "/v1/embeddings"
    endpoint: str
    state: JobState
    input_file_id: str
    created_at: float
    expires_at: float
    #: row defaults (max_tokens, temperature, top_p, top_k) a row's own body overrides
    params: dict[str, Any] = field(default_factory=dict)
    #: dialect fields echoed back (metadata, displayName, outputDatasetId, ...)
    meta: dict[str, Any] = field(default_factory=dict)
    #: the state finalizing leads to (succeeded, cancelled or expired)
    final_state: JobState | None = None
    #: validation failures: [{"code", "message", "line", "param"}]
    errors: list[dict[str, Any]] | None = None
    #: why the batch failed as a whole
    error: JobError | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    #: rows counted at validation
    total: int = 0
    #: the tokens its rows were estimated at, by model (the tenant's enqueued-token
    #: bound holds them until the rows end: :mod:`inferq.core.batch_validation`)
    enqueued_tokens: dict[str, int] = field(default_factory=dict)
    #: the counts frozen when the batch ended (live counts come from its rows)
    counts: BatchCounts | None = None
    #: only the custom_ids of rows that did not succeed in this earlier batch run
    continued_from: str | None = None
    idempotency_key: str | None = None
    validated_at: float | None = None
    started_at: float | None = None
    finalizing_at: float | None = None
    cancelling_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    #: the runner holding the batch's bookkeeping lease
    owner: str | None = None
    lease_expires_at: float | None = None
    seq: int = 0
    #: how its rows' ids are made (:func:`inferq.core.batch_format.row_id`): 2, in the
    #: order of the batches' creation and then of their lines; 1, name-based (before 2)
    row_ids: int = 2

    def evolve(self, **changes: Any) -> Batch:
        return copied(self, changes)
