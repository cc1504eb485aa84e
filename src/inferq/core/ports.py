"""The ports core owns: what its services need from storage, one narrow protocol each.

Each service takes the narrowest port it uses (:class:`~inferq.core.keys.KeyService` a
:class:`KeyStore`, :class:`~inferq.core.service.JobService` a :class:`JobQueue`, …);
the store adapters (``inferq.store``: the memory fake, SQLite, PostgreSQL) implement
them all at once as a :class:`Store`, and every one of them passes the same contract
suite (``tests/contract/test_store_contract.py``). The bytes of files live behind
:class:`BlobStore` (:mod:`inferq.core.blob_port`, re-exported here; adapters in
``inferq.blobs``, contract ``test_blob_contract.py``).

Semantics every store keeps:

* a write returns only after it is durable (committed); ``insert_job`` in particular.
* ``claim`` hands out jobs in scheduling order: service class ascending, priority
  descending, submission order ascending. It also re-claims running jobs whose
  lease expired (attempt + 1, original priority kept) and fails those that used
  up their attempts, keeping the last error.
* Worker-side updates (``renew_leases``, ``set_progress``, ``complete``, ``fail``,
  ``requeue``) are fenced by a :class:`~inferq.core.models.Lease`: they change nothing
  and return False unless the job is still running under that owner and attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from inferq.core.blob_port import CHUNK as CHUNK
from inferq.core.blob_port import BlobStore as BlobStore
from inferq.core.blob_port import BlobWriter as BlobWriter
from inferq.core.blob_port import tenant_prefix as tenant_prefix
from inferq.core.events import TextRelay
from inferq.core.fairness import FairShares, TenantStore
from inferq.core.limits import RateStore
from inferq.core.models import (
    ActiveCount,
    ApiKey,
    Batch,
    BatchCounts,
    FileRecord,
    Job,
    JobError,
    JobFilter,
    Lease,
    QueueMetrics,
)
from inferq.core.nodes import NodeStore
from inferq.core.states import JobState, ServiceClass
from inferq.core.throughput import FinishedCount
from inferq.core.webhooks import WebhookStore
from inferq.core.work import Result

# -- jobs -------------------------------------------------------------------------------


class JobLookup(Protocol):
    """Reading jobs."""

    async def get_job(self, job_id: str, *, tenant: str | None) -> Job | None:
        """The job, or None when it does not exist or belongs to another tenant.

        ``tenant=None`` reads across tenants (the operator's CLI).
        """

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        """Jobs matching ``flt``, newest first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimOrder:
    """What a worker claims (:meth:`JobQueue.claim`): up to ``limit`` jobs of ``models``
    (None: any), leased to ``owner`` for ``lease_seconds``, in fair order with ``fair``."""

    owner: str
    limit: int
    lease_seconds: float
    models: Collection[str] | None = None
    fair: bool = False


@dataclass(frozen=True, slots=True)
class Ending:
    """How :meth:`JobQueue.finish` and :meth:`BatchStore.finish_rows` end jobs: the
    terminal ``state`` they move them to and the ``error`` recorded with it (``finish``
    keeps the job's own error where it is None)."""

    state: JobState
    error: JobError | None = None


class JobQueue(JobLookup, FairShares, Protocol):
    """The durable priority queue: what clients submit, what workers lease."""

    async def insert_job(self, job: Job) -> Job:
        """Store a new job durably; return it with its ``seq`` assigned.

        Raises :class:`~inferq.core.errors.Conflict` when a job has this id.
        """

    async def claim(
        self, order: ClaimOrder, *, now: float, max_class: ServiceClass = ServiceClass.BATCH
    ) -> list[Job]:
        """Lease up to ``order.limit`` claimable jobs of ``order.models`` (None: any) and of
        classes up to ``max_class`` to ``order.owner``, in scheduling order.

        With ``order.fair``, tenants share each class by weight (:mod:`inferq.core.fairness`):
        the expired leases first, then the waiting tenants' jobs, each tenant's in
        scheduling order, and the claiming tenants are charged for them.
        """

    async def insert_and_claim(
        self, job: Job, order: ClaimOrder, *, now: float
    ) -> tuple[Job, list[Job]]:
        """:meth:`insert_job`, then :meth:`claim` as ``order`` says: the job as stored and
        the jobs claimed (the new one among them only when its turn has come). Both in one
        transaction where the store can (SQLite: one commit for the two); otherwise one
        after the other. Nothing is stored when the insert fails.
        """

    async def renew_leases(self, leases: Sequence[Lease], *, until: float) -> set[str]:
        """Extend the given leases; return the ids still held."""

    async def set_progress(self, lease: Lease, info: dict[str, Any]) -> bool:
        """Merge ``info`` into the job's info (fenced)."""

    async def complete(self, lease: Lease, result: Result, *, now: float) -> bool:
        """Record the result and mark the job succeeded (fenced)."""

    async def fail(self, lease: Lease, error: JobError, *, now: float, retry: bool) -> bool:
        """Record ``error``; requeue when ``retry`` and attempts remain, else fail (fenced)."""

    async def requeue(self, lease: Lease) -> bool:
        """Hand a running job back to the queue without using up an attempt (fenced).

        For preemption: the job stopped for more urgent work, not because it failed;
        it keeps its place (class, priority, submission order) and runs again later.
        """

    async def finish(
        self, job_id: str, ending: Ending, *, tenant: str | None, now: float
    ) -> tuple[Job, Job] | None:
        """Move a non-terminal job to the terminal ``ending.state`` (cancelled or expired).

        Returns ``(before, after)``; ``after`` equals ``before`` when the job was
        already terminal. None when the job does not exist for the tenant.
        """

    async def cancel_queued(self, *, tenant: str, model: str, now: float) -> list[Job]:
        """Cancel every queued job of the tenant for the model; return them, cancelled."""

    async def delete_job(self, job_id: str, *, tenant: str) -> bool:
        """Delete the tenant's job (never a batch row); False when there is none."""

    async def count_queued(self, *, tenant: str | None, limit: int) -> int:
        """Queued jobs that are not batch rows (of ``tenant``, or of every tenant),
        counted up to ``limit`` (:func:`inferq.core.limits.check_queue`)."""

    async def expire_overdue(self, *, now: float) -> list[str]:
        """Expire queued and running jobs whose deadline passed; return their ids."""

    async def metrics(self, *, tenant: str, model: str | None) -> QueueMetrics:
        """Counts of the tenant's running and waiting jobs."""

    async def count_active(self, *, tenant: str | None = None) -> list[ActiveCount]:
        """The validating, queued and running jobs of every tenant (or of ``tenant``),
        counted by model, service class, state and whether they are batch rows (groups
        of none left out).

        Read at each metrics scrape, so every process of a fleet reports the same numbers.
        """

    async def finished_counts(
        self, *, tenant: str | None, since: float, until: float, bucket: float
    ) -> list[FinishedCount]:
        """The jobs (of ``tenant``, or of every tenant) that ended in ``[since, until)``,
        counted per interval of ``bucket`` seconds from ``since``, with their tokens;
        intervals in which none ended are left out."""

    async def listen(
        self, *, on_submitted: Callable[[], None], on_ended: Callable[[str], None]
    ) -> bool:
        """Deliver other processes' events, where the store can; return whether it does.

        ``on_submitted`` runs when any process queued work, ``on_ended`` with the id of
        a job that reached a terminal state. A store without a notification channel
        returns False and everyone relies on polling.
        """
        return False

    def text_relay(self) -> TextRelay | None:
        """The channel that carries generated text between the processes on this store,
        where it has one (SQLite's datagram bus, PostgreSQL's NOTIFY); None otherwise
        (streams of jobs run in another process then get their text when the job ends)."""
        return None


# -- files and datasets -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FileFilter:
    """What :meth:`FileStore.list_files` selects: the tenant's records of ``kind``
    (``"file"`` or ``"dataset"``) and of ``purpose`` (None: any), up to ``limit`` of them,
    starting after the record with id ``after`` (None: from the newest)."""

    tenant: str
    kind: str
    limit: int
    after: str | None = None
    purpose: str | None = None


class FileStore(Protocol):
    """The records of uploaded files and datasets (their bytes are in a BlobStore)."""

    async def insert_file(self, record: FileRecord) -> FileRecord | None:
        """Store a new file record; None when the tenant already has one with this id."""

    async def get_file(self, file_id: str, *, tenant: str) -> FileRecord | None:
        """The tenant's file or dataset with this id."""

    async def list_files(self, flt: FileFilter) -> list[FileRecord]:
        """The records ``flt`` selects, newest first, starting after the record ``flt.after``."""

    async def update_file(self, record: FileRecord) -> bool:
        """Replace the record's filename, bytes, status and meta; False when it is gone."""

    async def delete_file(self, file_id: str, *, tenant: str) -> bool:
        """Delete the record; False when there was none."""


# -- batches and their rows ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchFilter:
    """What :meth:`BatchLookup.list_batches` selects: batches of ``tenant``, of ``dialect``
    and in ``states`` (each None: any), up to ``limit`` of them, starting after the batch
    with id ``after`` (None: from the newest)."""

    tenant: str | None
    dialect: str | None
    limit: int
    after: str | None = None
    states: frozenset[JobState] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RowFilter:
    """What :meth:`BatchStore.batch_rows` selects: the rows of the tenant's batch
    ``batch_id`` with ``batch_line > after_line`` and in ``states`` (None: any), up to
    ``limit`` of them."""

    tenant: str
    batch_id: str
    after_line: int
    limit: int
    states: frozenset[JobState] | None = None


class BatchLookup(Protocol):
    """Reading batches (and document workflow jobs, which are batch records)."""

    async def get_batch(self, batch_id: str, *, tenant: str | None) -> Batch | None:
        """The batch; ``tenant=None`` reads across tenants."""

    async def list_batches(self, flt: BatchFilter) -> list[Batch]:
        """The batches ``flt`` selects, newest first, starting after the batch ``flt.after``."""


class BatchStore(BatchLookup, Protocol):
    """Batch records, their bookkeeping lease, and their rows (jobs with a batch_id)."""

    async def insert_batch(self, batch: Batch) -> tuple[Batch, bool]:
        """Store a new batch; return it and True.

        When the tenant already has a batch with the same ``idempotency_key`` (not
        None), store nothing and return that batch and False. Raises
        :class:`~inferq.core.errors.Conflict` when the tenant has a batch with this id.
        """

    async def active_batches(
        self, *, now: float, limit: int, workflows: bool, after: int = 0
    ) -> list[Batch]:
        """Open batches of one kind, of every tenant, whose lease is free or expired.

        ``workflows`` picks the kind: document workflow jobs (dialect ``unstructured``)
        or every other batch, so that a backlog of one kind never fills the page of the
        runner of the other. Oldest first (by ``seq``), after the record whose ``seq``
        is ``after``: a runner pages on with the ``seq`` of the last record it got.
        """

    async def lease_batch(self, batch: Batch, *, owner: str, now: float, until: float) -> bool:
        """Take (or extend) the bookkeeping lease of a batch; False when another holds it."""

    async def update_batch(self, batch: Batch, *, expect: JobState) -> bool:
        """Write every field of ``batch`` when the stored one is still in ``expect``."""

    async def count_open_batches(self, *, tenant: str) -> int:
        """How many of the tenant's batches are not terminal (workflow jobs not counted)."""

    async def delete_batch(self, batch_id: str, *, tenant: str) -> bool:
        """Delete the batch and its rows; False when there was none."""

    async def insert_rows(self, rows: Sequence[Job]) -> None:
        """Store rows durably in one transaction; rows whose id exists are skipped."""

    async def release_rows(self, *, tenant: str, batch_id: str) -> int:
        """Move the batch's validating rows to queued; return how many."""

    async def batch_counts(self, *, tenant: str, batch_id: str) -> BatchCounts:
        """Count the batch's rows by state and sum the tokens of finished ones."""

    async def batch_rows(self, flt: RowFilter) -> list[Job]:
        """The batch's rows ``flt`` selects (``batch_line > flt.after_line``), in line order."""

    async def duplicate_custom_ids(
        self, *, tenant: str, batch_id: str, limit: int
    ) -> list[tuple[str, int, int]]:
        """custom_ids used by more than one row: (custom_id, first line, a later line)."""

    async def finish_rows(self, ending: Ending, *, tenant: str, batch_id: str, now: float) -> int:
        """Move the batch's validating, queued and running rows to ``ending.state``, with
        ``ending.error``; return how many."""


class BatchFileStore(BatchStore, FileStore, Protocol):
    """What batch processing uses: batches, their rows, and the records of their input
    and output files."""


class RetentionStore(BatchStore, FileStore, Protocol):
    """What the retention sweep (:mod:`inferq.core.retention`) asks of the store, besides
    deleting files and batches."""

    async def expired_files(self, *, now: float, limit: int) -> list[FileRecord]:
        """Files whose ``expires_at`` passed, none an open batch reads, soonest first."""

    async def purge_jobs(self, *, cutoff: float, limit: int, workflow_origin: str) -> int:
        """Delete up to ``limit`` jobs (not batch rows) that ended before ``cutoff``;
        those of ``workflow_origin`` only while their tenant has no open workflow job.
        Return how many."""

    async def finished_batches(self, *, cutoff: float, limit: int) -> list[Batch]:
        """Terminal batches (and workflow jobs) that ended before ``cutoff``, oldest first."""

    async def purge_batch_rows(self, *, tenant: str, batch_id: str, limit: int) -> int:
        """Delete up to ``limit`` rows of the batch; return how many."""

    async def known_records(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` name a file, dataset or batch of any tenant."""


# -- API keys ---------------------------------------------------------------------------


class KeyStore(JobLookup, BatchLookup, Protocol):
    """API keys (only their hashes), and the lookups that tell whether a tenant exists:
    a tenant is there once it has a key, a job or a batch."""

    async def insert_key(self, key: ApiKey, *, key_hash: str) -> None:
        """Store a new key; only its hash is kept.

        Raises :class:`~inferq.core.errors.Conflict` when a key has this name.
        """

    async def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not."""

    async def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""

    async def revoke_key(self, id_or_name: str, *, now: float) -> ApiKey | None:
        """Revoke the key with this id or name; None when there is none."""


# -- the whole store ------------------------------------------------------------------------


class Store(
    JobQueue,
    NodeStore,
    BatchFileStore,
    KeyStore,
    TenantStore,
    RateStore,
    WebhookStore,
    RetentionStore,
    Protocol,
):
    """Every port at once, and the store's life: what each store adapter implements."""

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""

    async def ping(self) -> bool:
        """Whether the store answers a trivial query."""


async def insert_then_claim(
    store: JobQueue, job: Job, order: ClaimOrder, *, now: float
) -> tuple[Job, list[Job]]:
    """:meth:`JobQueue.insert_and_claim` for a store that cannot do both in one
    transaction: the insert, then the claim."""
    stored = await store.insert_job(job)
    return stored, await store.claim(order, now=now)
