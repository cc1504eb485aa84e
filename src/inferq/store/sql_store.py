"""The store written once for every SQL database, over an :class:`Executor`.

Each method builds its parameters, runs named queries (under the same names for every
database: ``sql/common.sql`` holds those whose SQL is the same everywhere,
``sql/<database>/queries.sql`` the rest) and turns rows into domain objects. A
database's subclass (:mod:`inferq.store.sqlite`, :mod:`inferq.store.postgres`) brings
its executor and overrides only what really runs differently there: the claim, the
bulk insert of a batch's rows, the changes to many rows at once, and what PostgreSQL
groups into one statement.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from inferq.core.errors import Conflict, StoreError
from inferq.core.events import TextRelay
from inferq.core.fairness import Settlement, TenantShare, check_weight
from inferq.core.models import (
    ActiveCount,
    Batch,
    BatchCounts,
    Job,
    JobError,
    JobFilter,
    Lease,
    QueueMetrics,
)
from inferq.core.ports import (
    BatchFilter,
    ClaimOrder,
    Ending,
    RowFilter,
    Store,
    insert_then_claim,
)
from inferq.core.states import TERMINAL_STATES, JobState, ServiceClass
from inferq.core.throughput import FinishedCount
from inferq.core.work import Result
from inferq.store import rows
from inferq.store.executor import Executor, Params, Steps, count, one
from inferq.store.fair import Rescues, in_order, share_of
from inferq.store.nodes import SqlNodes
from inferq.store.rows import Row
from inferq.store.sql_files import SqlFiles
from inferq.store.sql_keys import SqlKeys
from inferq.store.sql_limits import SqlLimits
from inferq.store.sql_retention import SqlRetention
from inferq.store.sql_webhooks import SqlWebhooks

E = TypeVar("E", bound=Executor)


class SqlStore(
    SqlFiles[E],
    SqlKeys[E],
    SqlLimits[E],
    SqlNodes[E],
    SqlRetention[E],
    SqlWebhooks[E],
    Store,
    Generic[E],
):
    """Every port of :class:`~inferq.core.ports.Store` over the executor ``db``."""

    def __init__(self, db: E) -> None:
        self.db = db
        #: when the claims last looked for expired leases
        self._rescues = Rescues()

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def ping(self) -> bool:
        try:
            row = await self.db.fetch_one("ping", {})
        except StoreError:
            return False
        return row is not None and bool(row["ok"])

    async def listen(
        self, *, on_submitted: Callable[[], None], on_ended: Callable[[str], None]
    ) -> bool:
        return await self.db.listen(on_submitted=on_submitted, on_ended=on_ended)

    def text_relay(self) -> TextRelay | None:
        """The executor's relay (SQLite's bus, PostgreSQL's LISTEN/NOTIFY), once
        listening."""
        return self.db.relay

    # -- jobs -------------------------------------------------------------------

    async def insert_job(self, job: Job) -> Job:
        return job.evolve(seq=await self._insert_job(job))

    async def _insert_job(self, job: Job) -> int:
        row = await self.db.fetch_one("insert_job", rows.job_params(job))
        if row is None:  # ON CONFLICT (id) DO NOTHING
            raise job_exists(job)
        return int(row["seq"])

    async def get_job(self, job_id: str, *, tenant: str | None) -> Job | None:
        row = await self.db.fetch_one("get_job", {"id": job_id, "tenant": tenant})
        return rows.row_to_job(row) if row else None

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        params = {
            "tenant": flt.tenant,
            "model": flt.model,
            "states": sorted(s.value for s in flt.states) if flt.states else None,
            "limit": flt.limit,
        }
        return [rows.row_to_job(r) for r in await self.db.fetch_all("list_jobs", params)]

    async def claim(
        self, order: ClaimOrder, *, now: float, max_class: ServiceClass = ServiceClass.BATCH
    ) -> list[Job]:
        params = claim_params(order, now=now, max_class=max_class)
        found = await (self._claim_fair(params) if order.fair else self._claim(params))
        return claimed_jobs(found, fair=order.fair)

    async def insert_and_claim(
        self, job: Job, order: ClaimOrder, *, now: float
    ) -> tuple[Job, list[Job]]:
        return await insert_then_claim(self, job, order, now=now)

    async def _claim(self, params: Params) -> list[Row]:
        """The claimed rows: the ``claim`` query fails the exhausted leases and claims."""
        return await self.db.fetch_all("claim", params)

    @abstractmethod
    async def _claim_fair(self, params: Params) -> list[Row]:
        """The claimed rows in fair order (:mod:`inferq.store.fair`), per database."""

    # -- tenants (fair share) -------------------------------------------------------

    async def settle_shares(self, settlements: Mapping[str, Settlement]) -> None:
        if settlements:
            await self.db.atomic(_settle(in_order(settlements)))

    async def set_tenant_weight(self, tenant: str, weight: float) -> TenantShare:
        params = {"tenant": tenant, "weight": check_weight(weight)}
        row = await self.db.fetch_one("set_tenant_weight", params)
        assert row is not None  # an upsert returning its row
        return share_of(row)

    async def list_tenants(self) -> list[TenantShare]:
        return [share_of(r) for r in await self.db.fetch_all("list_tenants", {})]

    async def count_queued(self, *, tenant: str | None, limit: int) -> int:
        row = await self.db.fetch_one("count_queued", {"tenant": tenant, "limit": limit})
        assert row is not None  # an aggregate: always one row
        return int(row["n"])

    async def renew_leases(self, leases: Sequence[Lease], *, until: float) -> set[str]:
        if not leases:
            return set()
        params = {
            "until": until,
            "ids": [lease.job_id for lease in leases],
            "owners": [lease.owner for lease in leases],
            "attempts": [lease.attempt for lease in leases],
        }
        return {r["id"] for r in await self.db.fetch_all("renew_leases", params)}

    async def set_progress(self, lease: Lease, info: dict[str, Any]) -> bool:
        params = {"info": rows.dumps(info), **_fence(lease)}
        return await self.db.execute("set_progress", params) > 0

    async def complete(self, lease: Lease, result: Result, *, now: float) -> bool:
        return await self._complete(complete_params(lease, result, now))

    async def _complete(self, params: Params) -> bool:
        return await self.db.execute("complete", params) > 0

    async def fail(self, lease: Lease, error: JobError, *, now: float, retry: bool) -> bool:
        params = {"error": rows.dumps(error.to_dict()), "retry": retry, "now": now}
        return await self.db.execute("fail", {**params, **_fence(lease)}) > 0

    async def requeue(self, lease: Lease) -> bool:
        return await self.db.execute("requeue", _fence(lease)) > 0

    async def finish(
        self, job_id: str, ending: Ending, *, tenant: str | None, now: float
    ) -> tuple[Job, Job] | None:
        params = {"id": job_id, "tenant": tenant, **_ending("finish", ending), "now": now}
        return await self.db.atomic(_finish(params))

    async def cancel_queued(self, *, tenant: str, model: str, now: float) -> list[Job]:
        params = {"tenant": tenant, "model": model, "now": now}
        return [rows.row_to_job(r) for r in await self.db.fetch_all("cancel_queued", params)]

    async def delete_job(self, job_id: str, *, tenant: str) -> bool:
        return await self.db.execute("delete_job", {"id": job_id, "tenant": tenant}) > 0

    async def expire_overdue(self, *, now: float) -> list[str]:
        return [r["id"] for r in await self.db.fetch_all("expire_overdue", {"now": now})]

    async def metrics(self, *, tenant: str, model: str | None) -> QueueMetrics:
        row = await self.db.fetch_one("metrics", {"tenant": tenant, "model": model})
        assert row is not None  # an aggregate: always one row
        return QueueMetrics(running=row["running"], waiting=row["waiting"], total=row["total"])

    async def count_active(self, *, tenant: str | None = None) -> list[ActiveCount]:
        return [
            ActiveCount(
                model=r["model"],
                service_class=ServiceClass(r["service_class"]),
                state=JobState(r["state"]),
                in_batch=bool(r["in_batch"]),
                count=int(r["n"]),
            )
            for r in await self.db.fetch_all("count_active", {"tenant": tenant})
        ]

    async def finished_counts(
        self, *, tenant: str | None, since: float, until: float, bucket: float
    ) -> list[FinishedCount]:
        params = {"tenant": tenant, "since": since, "until": until, "bucket": bucket}
        return [
            FinishedCount(
                bucket=int(r["bucket"]),
                jobs=int(r["jobs"]),
                succeeded=int(r["succeeded"]),
                prompt_tokens=int(r["prompt_tokens"]),
                completion_tokens=int(r["completion_tokens"]),
            )
            for r in await self.db.fetch_all("finished_counts", params)
        ]

    # -- batches ------------------------------------------------------------------

    async def insert_batch(self, batch: Batch) -> tuple[Batch, bool]:
        try:
            return await self.db.atomic(_insert_batch(batch, rows.batch_params(batch)))
        except Conflict as exc:
            raise batch_exists(batch) from exc

    async def get_batch(self, batch_id: str, *, tenant: str | None) -> Batch | None:
        row = await self.db.fetch_one("get_batch", {"id": batch_id, "tenant": tenant})
        return rows.row_to_batch(row) if row else None

    async def list_batches(self, flt: BatchFilter) -> list[Batch]:
        found = await self.db.fetch_all("list_batches", rows.filter_params(flt))
        return [rows.row_to_batch(r) for r in found]

    async def active_batches(
        self, *, now: float, limit: int, workflows: bool, after: int = 0
    ) -> list[Batch]:
        params = {"now": now, "limit": limit, "workflows": workflows, "after": after}
        return [rows.row_to_batch(r) for r in await self.db.fetch_all("active_batches", params)]

    async def lease_batch(self, batch: Batch, *, owner: str, now: float, until: float) -> bool:
        params = {"tenant": batch.tenant, "id": batch.id, "owner": owner}
        return await self.db.execute("lease_batch", {**params, "now": now, "until": until}) > 0

    async def update_batch(self, batch: Batch, *, expect: JobState) -> bool:
        params = {**rows.batch_params(batch), "expect": expect.value}
        try:
            return await self.db.execute("update_batch", params) > 0
        except Conflict as exc:
            raise Conflict(
                f"a batch with idempotency key {batch.idempotency_key!r} already exists",
                param="idempotency_key",
            ) from exc

    async def count_open_batches(self, *, tenant: str) -> int:
        row = await self.db.fetch_one("count_open_batches", {"tenant": tenant})
        assert row is not None  # an aggregate: always one row
        return int(row["n"])

    async def delete_batch(self, batch_id: str, *, tenant: str) -> bool:
        params = {"tenant": tenant, "id": batch_id, "batch_id": batch_id}
        return await self.db.atomic(_delete_batch(params))

    # -- batch rows ---------------------------------------------------------------

    @abstractmethod
    async def insert_rows(self, rows: Sequence[Job]) -> None:
        """Per database: how many rows one statement takes differs."""

    async def release_rows(self, *, tenant: str, batch_id: str) -> int:
        return await self._change_rows("release_rows", {"tenant": tenant, "batch_id": batch_id})

    async def _change_rows(self, query: str, params: Params) -> int:
        """Run an update of many of a batch's rows; return how many changed."""
        return await self.db.execute(query, params)

    async def batch_counts(self, *, tenant: str, batch_id: str) -> BatchCounts:
        params = {"tenant": tenant, "batch_id": batch_id}
        return rows.fold_counts(await self.db.fetch_all("batch_counts", params))

    async def batch_rows(self, flt: RowFilter) -> list[Job]:
        found = await self.db.fetch_all("batch_rows", rows.filter_params(flt))
        return [rows.row_to_job(r) for r in found]

    async def duplicate_custom_ids(
        self, *, tenant: str, batch_id: str, limit: int
    ) -> list[tuple[str, int, int]]:
        params = {"tenant": tenant, "batch_id": batch_id, "limit": limit}
        found = await self.db.fetch_all("duplicate_custom_ids", params)
        return [(r["custom_id"], r["first_line"], r["later_line"]) for r in found]

    async def finish_rows(self, ending: Ending, *, tenant: str, batch_id: str, now: float) -> int:
        params = {"tenant": tenant, "batch_id": batch_id, **_ending("finish_rows", ending)}
        return await self._change_rows("finish_rows", {**params, "now": now})


# -- what several statements do together ------------------------------------------------


def _finish(params: Params) -> Steps[tuple[Job, Job] | None]:
    """The job as it was (locked against concurrent changes) and as ``finish`` left it."""
    row = yield one("lock_job", params)
    if row is None:
        return None
    before = rows.row_to_job(row)
    updated = yield one("finish", params)
    return before, rows.row_to_job(updated) if updated else before


def _insert_batch(batch: Batch, params: Params) -> Steps[tuple[Batch, bool]]:
    """The tenant's batch with this idempotency key, or the new one."""
    if batch.idempotency_key is not None:
        row = yield one("find_batch_by_key", params)
        if row is not None:
            return rows.row_to_batch(row), False
    row = yield one("insert_batch", params)
    return batch.evolve(seq=int(row["seq"])), True


def _settle(settlements: Sequence[Params]) -> Steps[None]:
    for params in settlements:
        yield count("settle_share", params)


def _delete_batch(params: Params) -> Steps[bool]:
    if (yield count("delete_batch", params)) == 0:
        return False
    yield count("delete_batch_rows", params)
    return True


# -- parameters ---------------------------------------------------------------------------


def claim_params(order: ClaimOrder, *, now: float, max_class: ServiceClass) -> Params:
    """The parameters of the claim queries."""
    return {
        "owner": order.owner,
        "limit": order.limit,
        "now": now,
        "lease_until": now + order.lease_seconds,
        "max_class": int(max_class),
        "models": sorted(order.models) if order.models is not None else None,
        "queued": True,
    }


def claimed_jobs(found: Sequence[Row], *, fair: bool) -> list[Job]:
    """The claimed rows as jobs, in scheduling order (the fair claim's order as it is)."""
    claimed = [rows.row_to_job(r) for r in found]
    if not fair:
        claimed.sort(key=lambda j: (int(j.service_class), -j.priority, j.seq))
    return claimed


def job_exists(job: Job) -> Conflict:
    return Conflict(f"a job with id {job.id} already exists", param="id")


def batch_exists(batch: Batch) -> Conflict:
    return Conflict(f"a batch with id {batch.id} already exists", param="id")


def complete_params(lease: Lease, result: Result, now: float) -> dict[str, Any]:
    return {
        "result": rows.dumps(result.to_dict()),
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "cached_tokens": result.usage.cached_tokens,
        "now": now,
        **_fence(lease),
    }


def _fence(lease: Lease) -> dict[str, Any]:
    return {"id": lease.job_id, "owner": lease.owner, "attempt": lease.attempt}


def _ending(method: str, ending: Ending) -> dict[str, Any]:
    """The ``state`` and ``error`` parameters of ``finish`` and ``finish_rows`` (an error of
    None is NULL); ValueError when the state is not terminal."""
    if ending.state not in TERMINAL_STATES:
        raise ValueError(f"{method} needs a terminal state, not {ending.state.value}")
    error = rows.dumps(ending.error.to_dict()) if ending.error else None
    return {"state": ending.state.value, "error": error}
