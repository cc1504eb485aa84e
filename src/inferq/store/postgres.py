"""PostgreSQL JobStore: many API servers and workers on one database.

* asyncpg with a connection pool sized by settings.
* Claim in one statement: ``FOR UPDATE SKIP LOCKED`` over the queued jobs and the
  expired leases, so concurrent workers never take the same row and never wait
  on each other; partial indexes serve both halves.
* Every write is committed before the call returns. Concurrent ``insert_job`` calls,
  and concurrent ``complete`` calls, are joined into one statement each (group
  commit, :class:`_Group`): the tables' NOTIFY triggers make PostgreSQL commit
  notifying transactions one at a time, each with its own WAL flush, so one
  statement per call would cap a process at one commit per flush.
* Driver errors are wrapped: a lost connection or a database that is down becomes
  :class:`~inferq.core.errors.StoreUnavailable` (the API answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence
from typing import Any, Generic, TypeVar

from inferq.core.errors import ConfigError, Conflict, StoreError, StoreUnavailable
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
from inferq.core.states import TERMINAL_STATES, JobState, ServiceClass
from inferq.store import rows
from inferq.store.base import JobStore
from inferq.store.sql import load_migrations, load_queries

T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")
log = logging.getLogger("inferq.store")
#: how long to wait between attempts to re-open the notification connection
RELISTEN_DELAY = 1.0

#: serialises schema migrations across processes (any constant shared by all)
MIGRATION_LOCK = 0x1F0E7A
#: most calls one grouped statement takes
GROUP_LIMIT = 256


def _import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:
        raise ConfigError("the PostgreSQL store needs asyncpg: pip install asyncpg") from exc
    return asyncpg


_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def positional(query: str) -> tuple[str, list[str]]:
    """``:name`` parameters to asyncpg's ``$n``; returns the SQL and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAM.sub(number, query), names


class _Query:
    def __init__(self, sql: str) -> None:
        self.sql, self.names = positional(sql)

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


Q = {name: _Query(sql) for name, sql in load_queries("postgres").items()}


class _Group(Generic[P, R]):
    """Group commit: concurrent calls of one write, run as one statement.

    A call made while none of the group's statements is in flight starts one at
    once, alone (the same statement and latency as without grouping); calls made
    while one is in flight wait for it and then go together in the next. Each call
    still returns only once the statement holding its row has committed. ``run``
    gets the items of a batch and returns one outcome (a value or an exception)
    for each, in order; ``key`` keeps two items with the same key out of one batch.
    """

    def __init__(
        self,
        run: Callable[[list[P]], Awaitable[list[R | Exception]]],
        *,
        key: Callable[[P], Hashable] | None = None,
    ) -> None:
        self._run = run
        self._key = key
        self._waiting: list[tuple[P, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: P) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[P, asyncio.Future[R]]]:
        """The next batch: waiting calls in arrival order, at most one per key."""
        batch: list[tuple[P, asyncio.Future[R]]] = []
        later: list[tuple[P, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for entry in self._waiting:
            if entry[1].done():  # its caller was cancelled before its turn: not written
                continue
            key = self._key(entry[0]) if self._key is not None else None
            if len(batch) >= GROUP_LIMIT or (key is not None and key in keys):
                later.append(entry)
            else:
                keys.add(key)
                batch.append(entry)
        self._waiting = later
        return batch

    async def _drain(self) -> None:
        batch: list[tuple[P, asyncio.Future[R]]] = []
        try:
            while batch := self._take():
                outcomes: Sequence[R | Exception]
                try:
                    outcomes = await self._run([item for item, _ in batch])
                except Exception as exc:
                    outcomes = _each(exc, len(batch))
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        except BaseException:  # cancelled: the event loop is going away
            for _, future in batch + self._waiting:
                future.cancel()
            self._waiting = []
            raise
        finally:
            self._task = None


def _each(exc: Exception, n: int) -> list[Exception]:
    """``exc`` for the first of ``n`` callers and a copy for each other (each raises its own)."""
    copies = [exc]
    for _ in range(n - 1):
        twin = copy.copy(exc)
        twin.__cause__ = exc.__cause__
        copies.append(twin)
    return copies


class PostgresStore(JobStore):
    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        server_settings: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.server_settings = server_settings or {}
        self._pool: Any = None
        self._asyncpg = _import_asyncpg()
        self._listener: asyncio.Task[None] | None = None
        self._inserts: _Group[Job, int] = _Group(self._insert_jobs)
        # one complete per job in a statement: a second one for the same job (the
        # same lease twice) goes in the next and finds the job no longer running
        self._completes: _Group[dict[str, Any], bool] = _Group(
            self._complete_leases, key=lambda params: params["id"]
        )

    # -- plumbing ---------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await self._asyncpg.create_pool(
                self.url,
                min_size=self.min_connections,
                max_size=self.max_connections,
                server_settings={"application_name": "inferq", **self.server_settings},
                reset=_keep_session,
            )
        except (OSError, self._asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        await self._guard(self._migrate)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _guard(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn``, turning driver errors into the store's errors."""
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        asyncpg = self._asyncpg
        try:
            return await fn()
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"already exists: {exc.detail or exc}") from exc
        except (
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
            asyncpg.AdminShutdownError,
            # what asyncpg raises on a connection the server cut while it sat idle in
            # the pool (MagicStack/asyncpg#1069): the next request gets a fresh one
            asyncpg.InternalClientError,
        ) as exc:
            raise StoreUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"PostgreSQL failed: {exc}") from exc

    async def _fetch(self, name: str, params: dict[str, Any]) -> list[Any]:
        query = Q[name]
        return await self._guard(lambda: self._pool.fetch(query.sql, *query.args(params)))

    async def _fetchrow(self, name: str, params: dict[str, Any]) -> Any:
        query = Q[name]
        return await self._guard(lambda: self._pool.fetchrow(query.sql, *query.args(params)))

    async def _execute(self, name: str, params: dict[str, Any]) -> int:
        query = Q[name]
        status: str = await self._guard(lambda: self._pool.execute(query.sql, *query.args(params)))
        return int(status.rsplit(" ", 1)[-1])

    async def _migrate(self) -> None:
        migrations = load_migrations("postgres")
        known = migrations[-1].version if migrations else 0
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            if current > known:
                raise StoreError(
                    f"the database schema is version {current}, newer than this inferq knows "
                    f"({known}); upgrade inferq"
                )
            for migration in migrations:
                if migration.version > current:
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )

    async def ping(self) -> bool:
        try:
            return bool(await self._guard(lambda: self._pool.fetchval("SELECT 1")))
        except StoreError:
            return False

    async def listen(
        self, *, on_submitted: Callable[[], None], on_ended: Callable[[str], None]
    ) -> bool:
        """LISTEN on a connection of its own, re-opened whenever it is lost."""
        ready = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(on_submitted, on_ended, ready))
        await ready.wait()
        return True

    async def _listen(
        self,
        on_submitted: Callable[[], None],
        on_ended: Callable[[str], None],
        ready: asyncio.Event,
    ) -> None:
        asyncpg = self._asyncpg
        while True:
            lost = asyncio.Event()
            conn = None
            try:
                conn = await asyncpg.connect(self.url, server_settings=self.server_settings)
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                await conn.add_listener("inferq_submitted", lambda *_: on_submitted())
                await conn.add_listener("inferq_ended", lambda *a: on_ended(a[3]))
                ready.set()
                # Anything that happened while not listening: let everyone look again.
                on_submitted()
                await lost.wait()
                log.warning("lost the PostgreSQL notification connection; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                ready.set()
                log.warning("cannot LISTEN on PostgreSQL (%s); retrying", exc)
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(RELISTEN_DELAY)

    # -- jobs -------------------------------------------------------------------

    async def insert_job(self, job: Job) -> Job:
        return job.evolve(seq=await self._inserts(job))

    async def _insert_job(self, job: Job) -> int:
        try:
            row = await self._fetchrow("insert_job", rows.job_params(job))
        except Conflict as exc:
            raise Conflict(f"a job with id {job.id} already exists", param="id") from exc
        return int(row["seq"])

    async def _insert_jobs(self, jobs: list[Job]) -> list[int | Exception]:
        """Each job's seq, or the error it alone would have met."""
        if len(jobs) > 1:
            try:
                found = await self._fetch("insert_jobs", _job_arrays(jobs))
            except StoreUnavailable:
                raise
            except (Conflict, StoreError):
                pass  # a duplicate id or a bad row: nothing was stored; each alone below
            else:
                seqs = {r["id"]: int(r["seq"]) for r in found}
                return [seqs[job.id] for job in jobs]
        outcomes: list[int | Exception] = []
        for job in jobs:
            try:
                outcomes.append(await self._insert_job(job))
            except (Conflict, StoreError) as exc:
                outcomes.append(exc)
        return outcomes

    async def get_job(self, job_id: str, *, tenant: str | None) -> Job | None:
        row = await self._fetchrow("get_job", {"id": job_id, "tenant": tenant})
        return rows.row_to_job(row) if row else None

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        params = {
            "tenant": flt.tenant,
            "model": flt.model,
            "states": sorted(s.value for s in flt.states) if flt.states else None,
            "limit": flt.limit,
        }
        return [rows.row_to_job(r) for r in await self._fetch("list_jobs", params)]

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
        params = {
            "owner": owner,
            "limit": limit,
            "now": now,
            "lease_until": now + lease_seconds,
            "max_class": int(max_class),
            "models": sorted(models) if models is not None else None,
        }
        claimed = [rows.row_to_job(r) for r in await self._fetch("claim", params)]
        claimed.sort(key=lambda j: (int(j.service_class), -j.priority, j.seq))
        return claimed

    async def renew_leases(self, leases: Sequence[Lease], *, until: float) -> set[str]:
        if not leases:
            return set()
        params = {
            "until": until,
            "ids": [lease.job_id for lease in leases],
            "owners": [lease.owner for lease in leases],
            "attempts": [lease.attempt for lease in leases],
        }
        return {r["id"] for r in await self._fetch("renew_leases", params)}

    async def set_progress(self, lease: Lease, info: dict[str, Any]) -> bool:
        return await self._execute("set_progress", {"info": rows.dumps(info), **_fence(lease)}) > 0

    async def complete(self, lease: Lease, result: Result, *, now: float) -> bool:
        params = {
            "result": rows.dumps(result.to_dict()),
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "cached_tokens": result.usage.cached_tokens,
            "now": now,
            **_fence(lease),
        }
        return await self._completes(params)

    async def _complete_leases(self, batch: list[dict[str, Any]]) -> list[bool | Exception]:
        """Whether each complete held its fence, or the error it alone would have met."""
        if len(batch) > 1:
            columns = {
                "ids": "id", "owners": "owner", "attempts": "attempt", "results": "result",
                "prompt_tokens": "prompt_tokens", "completion_tokens": "completion_tokens",
                "cached_tokens": "cached_tokens", "nows": "now",
            }  # fmt: skip
            arrays = {name: [p[column] for p in batch] for name, column in columns.items()}
            try:
                found = await self._fetch("complete_many", arrays)
            except StoreUnavailable:
                raise
            except (Conflict, StoreError):
                pass  # a bad row: nothing was written; each alone below
            else:
                done = {r["id"] for r in found}
                return [params["id"] in done for params in batch]
        outcomes: list[bool | Exception] = []
        for params in batch:
            try:
                outcomes.append(await self._execute("complete", params) > 0)
            except (Conflict, StoreError) as exc:
                outcomes.append(exc)
        return outcomes

    async def fail(self, lease: Lease, error: JobError, *, now: float, retry: bool) -> bool:
        params = {"error": rows.dumps(error.to_dict()), "retry": retry, "now": now}
        return await self._execute("fail", {**params, **_fence(lease)}) > 0

    async def requeue(self, lease: Lease) -> bool:
        return await self._execute("requeue", _fence(lease)) > 0

    async def finish(
        self,
        job_id: str,
        *,
        tenant: str | None,
        state: JobState,
        error: JobError | None,
        now: float,
    ) -> tuple[Job, Job] | None:
        if state not in TERMINAL_STATES:
            raise ValueError(f"finish needs a terminal state, not {state.value}")
        lock, finish = Q["lock_job"], Q["finish"]
        params = {
            "id": job_id,
            "tenant": tenant,
            "state": state.value,
            "error": rows.dumps(error.to_dict()) if error else None,
            "now": now,
        }

        async def run() -> tuple[Job, Job] | None:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(lock.sql, *lock.args(params))
                if row is None:
                    return None
                before = rows.row_to_job(row)
                updated = await conn.fetchrow(finish.sql, *finish.args(params))
                return before, rows.row_to_job(updated) if updated else before

        return await self._guard(run)

    async def cancel_queued(self, *, tenant: str, model: str, now: float) -> int:
        return await self._execute("cancel_queued", {"tenant": tenant, "model": model, "now": now})

    async def expire_overdue(self, *, now: float) -> list[str]:
        return [r["id"] for r in await self._fetch("expire_overdue", {"now": now})]

    async def metrics(self, *, tenant: str, model: str | None) -> QueueMetrics:
        row = await self._fetchrow("metrics", {"tenant": tenant, "model": model})
        return QueueMetrics(running=row["running"], waiting=row["waiting"], total=row["total"])

    # -- files and datasets --------------------------------------------------

    async def insert_file(self, record: FileRecord) -> FileRecord | None:
        row = await self._fetchrow("insert_file", rows.file_params(record))
        return record.evolve(seq=int(row["seq"])) if row else None

    async def get_file(self, file_id: str, *, tenant: str) -> FileRecord | None:
        row = await self._fetchrow("get_file", {"id": file_id, "tenant": tenant})
        return rows.row_to_file(row) if row else None

    async def list_files(
        self,
        *,
        tenant: str,
        kind: str,
        limit: int,
        after: str | None = None,
        purpose: str | None = None,
    ) -> list[FileRecord]:
        params = {
            "tenant": tenant,
            "kind": kind,
            "limit": limit,
            "after": after,
            "purpose": purpose,
        }
        return [rows.row_to_file(r) for r in await self._fetch("list_files", params)]

    async def update_file(self, record: FileRecord) -> bool:
        return await self._execute("update_file", rows.file_params(record)) > 0

    async def delete_file(self, file_id: str, *, tenant: str) -> bool:
        return await self._execute("delete_file", {"id": file_id, "tenant": tenant}) > 0

    # -- batches ------------------------------------------------------------------

    async def insert_batch(self, batch: Batch) -> tuple[Batch, bool]:
        params = rows.batch_params(batch)
        insert, find = Q["insert_batch"], Q["find_batch_by_key"]

        async def run() -> tuple[Batch, bool] | None:
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(insert.sql, *insert.args(params))
                if row is not None:
                    return batch.evolve(seq=int(row["seq"])), True
                # the tenant has a batch with this key (committed, as ON CONFLICT waited
                # for any transaction inserting it)
                existing = await conn.fetchrow(find.sql, *find.args(params))
                return (rows.row_to_batch(existing), False) if existing else None

        for _ in range(3):  # the batch holding the key may be deleted between the two
            try:
                outcome = await self._guard(run)
            except Conflict as exc:
                raise Conflict(f"a batch with id {batch.id} already exists", param="id") from exc
            if outcome is not None:
                return outcome
        raise StoreError(f"cannot insert batch {batch.id}: its idempotency key keeps changing")

    async def get_batch(self, batch_id: str, *, tenant: str | None) -> Batch | None:
        row = await self._fetchrow("get_batch", {"id": batch_id, "tenant": tenant})
        return rows.row_to_batch(row) if row else None

    async def list_batches(
        self,
        *,
        tenant: str | None,
        dialect: str | None,
        limit: int,
        after: str | None = None,
        states: frozenset[JobState] | None = None,
    ) -> list[Batch]:
        params = {
            "tenant": tenant,
            "dialect": dialect,
            "limit": limit,
            "after": after,
            "states": _states(states),
        }
        return [rows.row_to_batch(r) for r in await self._fetch("list_batches", params)]

    async def active_batches(
        self, *, now: float, limit: int, workflows: bool, after: int = 0
    ) -> list[Batch]:
        params = {"now": now, "limit": limit, "workflows": workflows, "after": after}
        found = await self._fetch("active_batches", params)
        return [rows.row_to_batch(r) for r in found]

    async def lease_batch(self, batch: Batch, *, owner: str, now: float, until: float) -> bool:
        params = {
            "tenant": batch.tenant,
            "id": batch.id,
            "owner": owner,
            "now": now,
            "until": until,
        }
        return await self._execute("lease_batch", params) > 0

    async def update_batch(self, batch: Batch, *, expect: JobState) -> bool:
        params = {**rows.batch_params(batch), "expect": expect.value}
        try:
            return await self._execute("update_batch", params) > 0
        except Conflict as exc:
            raise Conflict(
                f"a batch with idempotency key {batch.idempotency_key!r} already exists",
                param="idempotency_key",
            ) from exc

    async def count_open_batches(self, *, tenant: str) -> int:
        row = await self._fetchrow("count_open_batches", {"tenant": tenant})
        return int(row[0])

    async def delete_batch(self, batch_id: str, *, tenant: str) -> bool:
        params = {"tenant": tenant, "id": batch_id, "batch_id": batch_id}
        delete, delete_rows = Q["delete_batch"], Q["delete_batch_rows"]

        async def run() -> bool:
            async with self._pool.acquire() as conn, conn.transaction():
                status: str = await conn.execute(delete.sql, *delete.args(params))
                if status == "DELETE 0":
                    return False
                await conn.execute(delete_rows.sql, *delete_rows.args(params))
                return True

        return await self._guard(run)

    # -- batch rows ---------------------------------------------------------------

    async def insert_rows(self, rows: Sequence[Job]) -> None:
        if rows:
            await self._execute("insert_rows", _job_arrays(rows))

    async def release_rows(self, *, tenant: str, batch_id: str) -> int:
        row = await self._fetchrow("release_rows", {"tenant": tenant, "batch_id": batch_id})
        return int(row["n"])

    async def batch_counts(self, *, tenant: str, batch_id: str) -> BatchCounts:
        found = await self._fetch("batch_counts", {"tenant": tenant, "batch_id": batch_id})
        return rows.fold_counts(found)

    async def batch_rows(
        self,
        *,
        tenant: str,
        batch_id: str,
        after_line: int,
        limit: int,
        states: frozenset[JobState] | None = None,
    ) -> list[Job]:
        params = {
            "tenant": tenant,
            "batch_id": batch_id,
            "after_line": after_line,
            "limit": limit,
            "states": _states(states),
        }
        return [rows.row_to_job(r) for r in await self._fetch("batch_rows", params)]

    async def duplicate_custom_ids(
        self, *, tenant: str, batch_id: str, limit: int
    ) -> list[tuple[str, int, int]]:
        params = {"tenant": tenant, "batch_id": batch_id, "limit": limit}
        found = await self._fetch("duplicate_custom_ids", params)
        return [(r["custom_id"], r["first_line"], r["later_line"]) for r in found]

    async def finish_rows(
        self,
        *,
        tenant: str,
        batch_id: str,
        state: JobState,
        error: JobError,
        now: float,
    ) -> int:
        if state not in TERMINAL_STATES:
            raise ValueError(f"finish_rows needs a terminal state, not {state.value}")
        params = {
            "tenant": tenant,
            "batch_id": batch_id,
            "state": state.value,
            "error": rows.dumps(error.to_dict()),
            "now": now,
        }
        return await self._execute("finish_rows", params)

    # -- API keys ---------------------------------------------------------------

    async def insert_key(self, key: ApiKey, *, key_hash: str) -> None:
        params = rows.key_params(key, key_hash)
        params["admin"] = key.admin
        try:
            await self._execute("insert_key", params)
        except Conflict as exc:
            raise Conflict(f"a key named {key.name!r} already exists", param="name") from exc

    async def find_key(self, key_hash: str) -> ApiKey | None:
        row = await self._fetchrow("find_key", {"key_hash": key_hash})
        return rows.row_to_key(row) if row else None

    async def list_keys(self) -> list[ApiKey]:
        return [rows.row_to_key(r) for r in await self._fetch("list_keys", {})]

    async def revoke_key(self, id_or_name: str, *, now: float) -> ApiKey | None:
        row = await self._fetchrow("revoke_key", {"key": id_or_name, "now": now})
        return rows.row_to_key(row) if row else None


async def _keep_session(conn: Any) -> None:
    """What the pool does to a released connection, besides ending an open transaction.

    asyncpg's default also sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL``: one more round trip for every store call, to undo session state the
    store never creates (it LISTENs on a connection of its own, takes advisory locks
    only per transaction, holds no cursors and sets nothing).
    """


def _fence(lease: Lease) -> dict[str, Any]:
    return {"id": lease.job_id, "owner": lease.owner, "attempt": lease.attempt}


def _states(states: frozenset[JobState] | None) -> list[str] | None:
    """A state filter as a text[] parameter (None: any)."""
    return sorted(s.value for s in states) if states is not None else None


#: the array parameters of insert_jobs and insert_rows, and the job_params column of each
_JOB_ARRAYS = {
    "ids": "id", "tenants": "tenant", "models": "model", "origins": "origin",
    "service_classes": "service_class", "priorities": "priority",
    "states": "state", "requests": "request", "infos": "info", "inputs": "inputs",
    "max_attempts": "max_attempts", "created_ats": "created_at",
    "deadline_ats": "deadline_at", "batch_ids": "batch_id", "custom_ids": "custom_id",
    "batch_lines": "batch_line",
}  # fmt: skip


def _job_arrays(jobs: Sequence[Job]) -> dict[str, list[Any]]:
    """Parameters of insert_jobs and insert_rows: one array per column, in job order."""
    params = [rows.job_params(job) for job in jobs]
    return {name: [p[column] for p in params] for name, column in _JOB_ARRAYS.items()}
