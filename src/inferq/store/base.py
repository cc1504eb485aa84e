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
    ChatResult,
    Job,
    JobError,
    JobFilter,
    Lease,
    QueueMetrics,
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
    async def complete(self, lease: Lease, result: ChatResult, *, now: float) -> bool:
        """Record the result and mark the job succeeded (fenced)."""

    @abstractmethod
    async def fail(self, lease: Lease, error: JobError, *, now: float, retry: bool) -> bool:
        """Record ``error``; requeue when ``retry`` and attempts remain, else fail (fenced)."""

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
