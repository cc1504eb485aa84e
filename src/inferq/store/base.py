"""The JobStore port: everything the core needs from durable storage.

Adapters: :mod:`inferq.store.memory` (the fake, for unit tests and queue
benchmarks) and :mod:`inferq.store.sqlite` (the default). All of them pass the
same contract suite (``tests/contract/test_store_contract.py``).

Semantics every adapter keeps:

* ``insert_job`` returns only after the job is durable (committed).
* ``claim`` hands out jobs in scheduling order: service class ascending, priority
  descending, submission order ascending. It also re-claims running jobs whose
  lease expired (attempt + 1, original priority kept) and fails those that used
  up their attempts, keeping the last error.
* Worker-side updates (``renew_leases``, ``set_progress``, ``complete``, ``fail``)
  are fenced by a :class:`~inferq.core.models.Lease`: they change nothing and
  return False unless the job is still running under that owner and attempt.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from typing import Any

from inferq.core.models import (
    ApiKey,
    Batch,
    BatchCounts,
    FileRecord,
    Job,
    JobError,
    JobFilter,
    Lease,
    QueueMetrics,
    Result,
)
from inferq.core.states import JobState, ServiceClass


class JobStore(ABC):
    """Durable storage of jobs and API keys."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""

    @abstractmethod
    async def ping(self) -> bool:
        """Whether the store answers a trivial query."""

    async def listen(
        self, *, on_submitted: Callable[[], None], on_ended: Callable[[str], None]
    ) -> bool:
        """Deliver other processes' events, where the adapter can; return whether it does.

        ``on_submitted`` runs when any process queued work, ``on_ended`` with the id of
        a job that reached a terminal state. Adapters without a notification channel
        return False and everyone relies on polling.
        """
        return False

    # -- jobs -------------------------------------------------------------------

    @abstractmethod
    async def insert_job(self, job: Job) -> Job:
        """Store a new job durably; return it with its ``seq`` assigned."""

    @abstractmethod
    async def get_job(self, job_id: str, *, tenant: str | None) -> Job | None:
        """The job, or None when it does not exist or belongs to another tenant.

        ``tenant=None`` reads across tenants (the operator's CLI).
        """

    @abstractmethod
    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        """Jobs matching ``flt``, newest first."""

    @abstractmethod
    async def claim(
        self,
        *,
        owner: str,
        limit: int,
        now: float,
        lease_seconds: float,
        max_class: ServiceClass = ServiceClass.BATCH,
        models: Collection[str] | None = None,
    ) -> list[Job]:
        """Lease up to ``limit`` claimable jobs to ``owner``, in scheduling order."""

    @abstractmethod
    async def renew_leases(self, leases: Sequence[Lease], *, until: float) -> set[str]:
        """Extend the given leases; return the ids still held."""

    @abstractmethod
    async def set_progress(self, lease: Lease, info: dict[str, Any]) -> bool:
        """Merge ``info`` into the job's info (fenced)."""

    @abstractmethod
    async def complete(self, lease: Lease, result: Result, *, now: float) -> bool:
        """Record the result and mark the job succeeded (fenced)."""

    @abstractmethod
    async def fail(self, lease: Lease, error: JobError, *, now: float, retry: bool) -> bool:
        """Record ``error``; requeue when ``retry`` and attempts remain, else fail (fenced)."""

    @abstractmethod
    async def requeue(self, lease: Lease) -> bool:
        """Hand a running job back to the queue without using up an attempt (fenced).

        For preemption: the job stopped for more urgent work, not because it failed;
        it keeps its place (class, priority, submission order) and runs again later.
        """

    @abstractmethod
    async def finish(
        self,
        job_id: str,
        *,
        tenant: str | None,
        state: JobState,
        error: JobError | None,
        now: float,
    ) -> tuple[Job, Job] | None:
        """Move a non-terminal job to the terminal ``state`` (cancelled or expired).

        Returns ``(before, after)``; ``after`` equals ``before`` when the job was
        already terminal. None when the job does not exist for the tenant.
        """

    @abstractmethod
    async def cancel_queued(self, *, tenant: str, model: str, now: float) -> int:
        """Cancel every queued job of the tenant for the model; return how many."""

    @abstractmethod
    async def expire_overdue(self, *, now: float) -> list[str]:
        """Expire queued and running jobs whose deadline passed; return their ids."""

    @abstractmethod
    async def metrics(self, *, tenant: str, model: str | None) -> QueueMetrics:
        """Counts of the tenant's running and waiting jobs."""

    # -- files and datasets --------------------------------------------------

    @abstractmethod
    async def insert_file(self, record: FileRecord) -> FileRecord | None:
        """Store a new file record; None when the tenant already has one with this id."""

    @abstractmethod
    async def get_file(self, file_id: str, *, tenant: str) -> FileRecord | None:
        """The tenant's file or dataset with this id."""

    @abstractmethod
    async def list_files(
        self,
        *,
        tenant: str,
        kind: str,
        limit: int,
        after: str | None = None,
        purpose: str | None = None,
    ) -> list[FileRecord]:
        """The tenant's records of ``kind``, newest first, starting after the record ``after``."""

    @abstractmethod
    async def update_file(self, record: FileRecord) -> bool:
        """Replace the record's filename, bytes, status and meta; False when it is gone."""

    @abstractmethod
    async def delete_file(self, file_id: str, *, tenant: str) -> bool:
        """Delete the record; False when there was none."""

    # -- batches ------------------------------------------------------------------

    @abstractmethod
    async def insert_batch(self, batch: Batch) -> tuple[Batch, bool]:
        """Store a new batch; return it and True.

        When the tenant already has a batch with the same ``idempotency_key`` (not
        None), store nothing and return that batch and False. Raises
        :class:`~inferq.core.errors.Conflict` when the tenant has a batch with this id.
        """

    @abstractmethod
    async def get_batch(self, batch_id: str, *, tenant: str | None) -> Batch | None:
        """The batch; ``tenant=None`` reads across tenants."""

    @abstractmethod
    async def list_batches(
        self,
        *,
        tenant: str | None,
        dialect: str | None,
        limit: int,
        after: str | None = None,
        states: frozenset[JobState] | None = None,
    ) -> list[Batch]:
        """Batches newest first, starting after the batch with id ``after``."""

    @abstractmethod
    async def active_batches(
        self, *, now: float, limit: int, workflows: bool, after: int = 0
    ) -> list[Batch]:
        """Open batches of one kind, of every tenant, whose lease is free or expired.

        ``workflows`` picks the kind: document workflow jobs (dialect ``unstructured``)
        or every other batch, so that a backlog of one kind never fills the page of the
        runner of the other. Oldest first (by ``seq``), after the record whose ``seq``
        is ``after``: a runner pages on with the ``seq`` of the last record it got.
        """

    @abstractmethod
    async def lease_batch(self, batch: Batch, *, owner: str, now: float, until: float) -> bool:
        """Take (or extend) the bookkeeping lease of a batch; False when another holds it."""

    @abstractmethod
    async def update_batch(self, batch: Batch, *, expect: JobState) -> bool:
        """Write every field of ``batch`` when the stored one is still in ``expect``."""

    @abstractmethod
    async def count_open_batches(self, *, tenant: str) -> int:
        """How many of the tenant's batches are not terminal (workflow jobs not counted)."""

    @abstractmethod
    async def delete_batch(self, batch_id: str, *, tenant: str) -> bool:
        """Delete the batch and its rows; False when there was none."""

    # -- batch rows (jobs with a batch_id) ----------------------------------------

    @abstractmethod
    async def insert_rows(self, rows: Sequence[Job]) -> None:
        """Store rows durably in one transaction; rows whose id exists are skipped."""

    @abstractmethod
    async def release_rows(self, *, tenant: str, batch_id: str) -> int:
        """Move the batch's validating rows to queued; return how many."""

    @abstractmethod
    async def batch_counts(self, *, tenant: str, batch_id: str) -> BatchCounts:
        """Count the batch's rows by state and sum the tokens of finished ones."""

    @abstractmethod
    async def batch_rows(
        self,
        *,
        tenant: str,
        batch_id: str,
        after_line: int,
        limit: int,
        states: frozenset[JobState] | None = None,
    ) -> list[Job]:
        """The batch's rows with ``batch_line > after_line``, in line order."""

    @abstractmethod
    async def duplicate_custom_ids(
        self, *, tenant: str, batch_id: str, limit: int
    ) -> list[tuple[str, int, int]]:
        """custom_ids used by more than one row: (custom_id, first line, a later line)."""

    @abstractmethod
    async def finish_rows(
        self,
        *,
        tenant: str,
        batch_id: str,
        state: JobState,
        error: JobError,
        now: float,
    ) -> int:
        """Move the batch's validating, queued and running rows to ``state``; return how many."""

    # -- API keys ---------------------------------------------------------------

    @abstractmethod
    async def insert_key(self, key: ApiKey, *, key_hash: str) -> None:
        """Store a new key; only its hash is kept."""

    @abstractmethod
    async def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not."""

    @abstractmethod
    async def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""

    @abstractmethod
    async def revoke_key(self, id_or_name: str, *, now: float) -> ApiKey | None:
        """Revoke the key with this id or name; None when there is none."""
