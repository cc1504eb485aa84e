"""PostgreSQL: the store for many API servers and workers on one database.

:class:`PostgresStore` over :class:`PostgresExecutor`:

* asyncpg with a connection pool sized by settings.
* Claim in one statement: ``FOR UPDATE SKIP LOCKED`` over the queued jobs and the
  expired leases, so concurrent workers never take the same row and never wait
  on each other; partial indexes serve both halves.
* Every write is committed before the call returns. Concurrent ``insert_job`` calls,
  and concurrent ``complete`` calls, are joined into one statement each (group
  commit, :class:`~inferq.store.grouping.Group`): the tables' NOTIFY triggers make PostgreSQL commit
  notifying transactions one at a time, each with its own WAL flush, so one
  statement per call would cap a process at one commit per flush.
* Driver errors are wrapped: a lost connection or a database that is down becomes
  :class:`~inferq.core.errors.StoreUnavailable` (the API answers 503).
* The notification connection LISTENs for the tables' NOTIFYs (work submitted, jobs
  ended) and carries the text relay (:mod:`inferq.store.postgres_relay`): generated text
  sent to the processes whose clients stream it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from inferq.core import fairness
from inferq.core.errors import Conflict, StoreError, StoreUnavailable
from inferq.core.models import Batch, Job, Lease
from inferq.core.work import Result
from inferq.drivers.postgres import import_asyncpg, unavailable_errors
from inferq.store import rows
from inferq.store.executor import Params, Step, Steps, drive_async
from inferq.store.fair import waiting_of
from inferq.store.grouping import Group
from inferq.store.postgres_relay import PostgresRelay
from inferq.store.rows import Row
from inferq.store.sql import check_version, load_migrations, load_queries
from inferq.store.sql_store import SqlStore, batch_exists, complete_params, job_exists

T = TypeVar("T")
log = logging.getLogger("inferq.store")
#: how long to wait between attempts to re-open the notification connection
RELISTEN_DELAY = 1.0

#: serialises schema migrations across processes (any constant shared by all)
MIGRATION_LOCK = 0x1F0E7A


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

    def args(self, params: Params) -> list[Any]:
        return [params[name] for name in self.names]


Q = {name: _Query(sql) for name, sql in load_queries("postgres").items()}


class PostgresExecutor:
    """Runs the PostgreSQL queries on a pool, and LISTENs on a connection of its own."""

    def __init__(
        self,
        url: str,
        *,
        min_connections: int,
        max_connections: int,
        server_settings: dict[str, str],
    ) -> None:
        self.url = url
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.server_settings = server_settings
        self._pool: Any = None
        self._asyncpg = import_asyncpg("the PostgreSQL store")
        self._unavailable = unavailable_errors(self._asyncpg)
        self._listener: asyncio.Task[None] | None = None
        #: the text relay, once listening (it rides on the notification connection)
        self.relay: PostgresRelay | None = None

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
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener])
        relay, self.relay = self.relay, None
        if relay is not None:
            await relay.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _guard(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)``, turning driver errors into the store's errors."""
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        asyncpg = self._asyncpg
        try:
            return await fn(*args)
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(f"already exists: {exc.detail or exc}") from exc
        except self._unavailable as exc:
            raise StoreUnavailable(f"PostgreSQL is unavailable: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"PostgreSQL failed: {exc}") from exc

    # One statement on the pool. These run for every job several times, so they call
    # the driver directly (no step object, no closure).

    async def fetch_one(self, query: str, params: Params) -> Row | None:
        q = Q[query]
        row: Row | None = await self._guard(self._pool.fetchrow, q.sql, *q.args(params))
        return row

    async def fetch_all(self, query: str, params: Params) -> list[Row]:
        q = Q[query]
        found: list[Row] = await self._guard(self._pool.fetch, q.sql, *q.args(params))
        return found

    async def execute(self, query: str, params: Params) -> int:
        q = Q[query]
        status: str = await self._guard(self._pool.execute, q.sql, *q.args(params))
        return _changed(status)

    async def atomic(self, steps: Steps[T]) -> T:
        async def run() -> T:
            async with self._pool.acquire() as conn, conn.transaction():
                return await drive_async(steps, lambda step: _run(conn, step))

        return await self._guard(run)

    async def _migrate(self) -> None:
        migrations = load_migrations("postgres")
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            check_version(max(applied, default=0), migrations)
            # every one not applied yet, an older number landed after a newer one included
            for migration in migrations:
                if migration.version not in applied:
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )

    async def listen(
        self, *, on_submitted: Callable[[], None], on_ended: Callable[[str], None]
    ) -> bool:
        """LISTEN on a connection of its own, re-opened whenever it is lost; the text
        relay rides on it."""
        ready = asyncio.Event()
        relay = self.relay = PostgresRelay()
        self._listener = asyncio.create_task(self._listen(on_submitted, on_ended, relay, ready))
        await ready.wait()
        return True

    async def _listen(
        self,
        on_submitted: Callable[[], None],
        on_ended: Callable[[str], None],
        relay: PostgresRelay,
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
                await relay.attach(conn)
                ready.set()
                # Anything that happened while not listening: let everyone look again.
                on_submitted()
                await lost.wait()
                log.warning("lost the PostgreSQL notification connection; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                ready.set()
                log.warning("cannot LISTEN on PostgreSQL (%s); retrying", exc)
            finally:
                relay.detach()  # what was relayed meanwhile is lost: a gap
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(RELISTEN_DELAY)


async def _run(conn: Any, step: Step) -> Any:
    """One statement on ``conn`` (a connection, or the pool, which has the same calls)."""
    query = Q[step.query]
    if step.result == "one":
        return await conn.fetchrow(query.sql, *query.args(step.params))
    if step.result == "all":
        return await conn.fetch(query.sql, *query.args(step.params))
    status: str = await conn.execute(query.sql, *query.args(step.params))
    return _changed(status)


def _changed(status: str) -> int:
    """The row count of a command status (``UPDATE 3``, ``INSERT 0 1``)."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore(SqlStore[PostgresExecutor]):
    """The store on a PostgreSQL database, shared by a fleet of processes."""

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        server_settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            PostgresExecutor(
                url,
                min_connections=min_connections,
                max_connections=max_connections,
                server_settings=server_settings or {},
            )
        )
        # one insert per id in a statement: a second one of the same id goes in the
        # next and finds the id taken
        self._inserts: Group[Job, int] = Group(
            one=self._insert_job, many=self._insert_jobs, key=lambda job: job.id
        )
        # one complete per job in a statement: a second one for the same job (the
        # same lease twice) goes in the next and finds the job no longer running
        self._completes: Group[Params, bool] = Group(
            one=self._complete, many=self._complete_many, key=lambda params: params["id"]
        )

    @property
    def url(self) -> str:
        return self.db.url

    async def insert_job(self, job: Job) -> Job:
        return job.evolve(seq=await self._inserts(job))

    async def _insert_jobs(self, jobs: list[Job]) -> list[int | Exception]:
        """Each job's seq, or Conflict where its id is taken (that job was skipped)."""
        found = await self.db.fetch_all("insert_jobs", _job_arrays(jobs))
        seqs = {r["id"]: int(r["seq"]) for r in found}
        return [seqs[job.id] if job.id in seqs else job_exists(job) for job in jobs]

    async def complete(self, lease: Lease, result: Result, *, now: float) -> bool:
        return await self._completes(complete_params(lease, result, now))

    async def _complete_many(self, batch: list[Params]) -> list[bool]:
        """Whether each complete held its fence."""
        arrays = {name: [p[column] for p in batch] for name, column in _COMPLETE_ARRAYS.items()}
        done = {r["id"] for r in await self.db.fetch_all("complete_many", arrays)}
        return [params["id"] in done for params in batch]

    async def _claim_fair(self, params: Params) -> list[Row]:
        """Two round trips: the waiting tenants, then one statement that takes the
        planned jobs and charges their tenants. Expired leases are looked for (and the
        exhausted failed) at most once a second (:class:`~inferq.store.fair.Rescues`)."""
        limit = int(params["limit"])
        rescued: list[Row] = []
        if self._rescues.due(params):
            rescued = await self.db.fetch_all("claim", {**params, "queued": False})
            if len(rescued) >= limit:
                return rescued
        waiting = waiting_of(await self.db.fetch_all("fair_waiting", params))
        picks = fairness.plan(waiting, limit - len(rescued))
        if not picks:
            return rescued
        shares = {w.share.tenant: w.share for w in waiting}
        plan = {
            "tenants": [p.tenant for p in picks],
            "classes": [p.service_class for p in picks],
            "quotas": [p.count for p in picks],
            "per_job": [shares[p.tenant].per_job for p in picks],
            "floor": fairness.floor_of(waiting),
        }
        return rescued + await self.db.fetch_all("claim_fair", {**params, **plan})

    async def insert_batch(self, batch: Batch) -> tuple[Batch, bool]:
        params = rows.batch_params(batch)
        for _ in range(3):  # the batch holding the key may be deleted between the two
            try:
                row = await self.db.fetch_one("insert_batch", params)
            except Conflict as exc:
                raise batch_exists(batch) from exc
            if row is not None:
                return batch.evolve(seq=int(row["seq"])), True
            # the tenant has a batch with this key (committed, as ON CONFLICT waited
            # for any transaction inserting it)
            existing = await self.db.fetch_one("find_batch_by_key", params)
            if existing is not None:
                return rows.row_to_batch(existing), False
        raise StoreError(f"cannot insert batch {batch.id}: its idempotency key keeps changing")

    async def insert_rows(self, rows: Sequence[Job]) -> None:
        if rows:
            await self.db.execute("insert_jobs", _job_arrays(rows))

    async def release_rows(self, *, tenant: str, batch_id: str) -> int:
        """One statement, which also wakes every process's workers (one NOTIFY)."""
        row = await self.db.fetch_one("release_rows", {"tenant": tenant, "batch_id": batch_id})
        assert row is not None  # an aggregate: always one row
        return int(row["n"])


async def _keep_session(conn: Any) -> None:
    """What the pool does to a released connection, besides ending an open transaction.

    asyncpg's default also sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL``: one more round trip for every store call, to undo session state the
    store never creates (it LISTENs on a connection of its own, takes advisory locks
    only per transaction, holds no cursors and sets nothing).
    """


#: the array parameters of insert_jobs, and the job_params column of each
_JOB_ARRAYS = {
    "ids": "id", "tenants": "tenant", "models": "model", "origins": "origin",
    "service_classes": "service_class", "priorities": "priority",
    "states": "state", "requests": "request", "infos": "info", "inputs": "inputs",
    "max_attempts": "max_attempts", "created_ats": "created_at",
    "deadline_ats": "deadline_at", "batch_ids": "batch_id", "custom_ids": "custom_id",
    "batch_lines": "batch_line",
}  # fmt: skip


#: the array parameters of complete_many, and the complete parameter of each
_COMPLETE_ARRAYS = {
    "ids": "id", "owners": "owner", "attempts": "attempt", "results": "result",
    "prompt_tokens": "prompt_tokens", "completion_tokens": "completion_tokens",
    "cached_tokens": "cached_tokens", "nows": "now",
}  # fmt: skip


def _job_arrays(jobs: Sequence[Job]) -> dict[str, list[Any]]:
    """Parameters of insert_jobs: one array per column, in job order."""
    params = [rows.job_params(job) for job in jobs]
    return {name: [p[column] for p in params] for name, column in _JOB_ARRAYS.items()}
