"""SQLite JobStore: the default, for one machine.

* WAL journal, so readers never block the writer and the writer never blocks them.
* One writer connection on its own thread. Writes from every request queue up
  and are committed together in one ``BEGIN IMMEDIATE`` transaction (group
  commit): each caller's future resolves only after the COMMIT, so an
  acknowledged job is on disk, and many concurrent submits share one fsync.
  Each write runs in a SAVEPOINT, so one failing write does not undo its batch.
* Reads use per-thread connections from the default executor.
* Other processes (the CLI while a server runs) open the same file safely;
  ``busy_timeout`` makes them wait for the lock instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

from inferq.core.errors import Conflict, StoreError, StoreUnavailable
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
Q = load_queries("sqlite")
_job_params = rows.job_params  # for insert_rows, whose argument is named rows
#: how many queued writes one transaction takes at most
MAX_GROUP = 512
BUSY_TIMEOUT_MS = 10_000
#: how many of a batch's rows release_rows and finish_rows change in one write
ROW_CHUNK = 5_000


def _connect(path: Path, *, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _private_files(path: Path) -> None:
    """Create the database's directory (0700) and file (0600) for this user alone.

    SQLite gives the -wal and -shm files the database file's mode; an existing
    database (and its -wal, -shm) made under a looser umask is tightened too, when
    this user owns it.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if name.stat().st_mode & 0o077:
                name.chmod(0o600)


class _Writer(threading.Thread):
    """Runs write functions on one connection, committing them in groups."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(name="inferq-sqlite-writer", daemon=True)
        self.conn = conn
        self.inbox: queue.SimpleQueue[
            tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]] | None
        ] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            first = self.inbox.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            self._run_group(group)
            if stop:
                return

    def _run_group(
        self, group: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]]
    ) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for fn, _ in group:
                self.conn.execute("SAVEPOINT w")
                try:
                    outcomes.append((True, fn(self.conn)))
                    self.conn.execute("RELEASE w")
                except Exception as exc:  # handed to the caller, who re-raises it
                    self.conn.execute("ROLLBACK TO w")
                    self.conn.execute("RELEASE w")
                    outcomes.append((False, _wrap(exc)))
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            failure = StoreUnavailable(f"SQLite write failed: {exc}")
            failure.__cause__ = exc
            outcomes = [(False, failure)] * len(group)
        for (_, fut), (ok, value) in zip(group, outcomes, strict=True):
            _deliver(fut, ok, value)


def _wrap(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error):
        wrapped = StoreError(f"SQLite write failed: {exc}")
        wrapped.__cause__ = exc
        return wrapped
    return exc


def _deliver(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    # RuntimeError: the caller's loop has closed, so nobody is waiting.
    with contextlib.suppress(RuntimeError):
        fut.get_loop().call_soon_threadsafe(_settle, fut, ok, value)


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class SQLiteStore(JobStore):
    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self._writer: _Writer | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------

    async def open(self) -> None:
        await asyncio.to_thread(_private_files, self.path)
        conn = await asyncio.to_thread(_connect, self.path, synchronous=self.synchronous)
        await asyncio.to_thread(migrate, conn)
        self._writer = _Writer(conn)
        self._writer.start()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.inbox.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer.conn.close()
            self._writer = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StoreUnavailable("the SQLite store is not open")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writer.inbox.put((fn, fut))
        return await fut

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, synchronous=self.synchronous)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite read failed: {exc}") from exc

        return await asyncio.to_thread(run)

    async def ping(self) -> bool:
        try:
            return bool(await self._read(lambda c: c.execute("SELECT 1").fetchone()[0]))
        except StoreError:
            return False

    # -- jobs -------------------------------------------------------------------

    async def insert_job(self, job: Job) -> Job:
        params = rows.job_params(job)

        def run(conn: sqlite3.Connection) -> int:
            try:
                return int(conn.execute(Q["insert_job"], params).fetchone()[0])
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"a job with id {job.id} already exists", param="id") from exc

        return job.evolve(seq=await self._write(run))

    async def get_job(self, job_id: str, *, tenant: str | None) -> Job | None:
        row = await self._read(
            lambda c: c.execute(Q["get_job"], {"id": job_id, "tenant": tenant}).fetchone()
        )
        return rows.row_to_job(row) if row else None

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        params = {
            "tenant": flt.tenant,
            "model": flt.model,
            "states": rows.dumps(sorted(s.value for s in flt.states)) if flt.states else None,
            "limit": flt.limit,
        }
        found = await self._read(lambda c: c.execute(Q["list_jobs"], params).fetchall())
        return [rows.row_to_job(r) for r in found]

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
            "models": rows.dumps(sorted(models)) if models is not None else None,
        }

        def run(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            conn.execute(Q["fail_exhausted_leases"], {"now": now})
            return conn.execute(Q["claim"], params).fetchall()

        claimed = [rows.row_to_job(r) for r in await self._write(run)]
        claimed.sort(key=lambda j: (int(j.service_class), -j.priority, j.seq))
        return claimed

    async def renew_leases(self, leases: Sequence[Lease], *, until: float) -> set[str]:
        def run(conn: sqlite3.Connection) -> set[str]:
            held = set()
            for lease in leases:
                cur = conn.execute(Q["renew_lease"], {"until": until, **_fence(lease)})
                if cur.rowcount:
                    held.add(lease.job_id)
            return held

        return await self._write(run) if leases else set()

    async def set_progress(self, lease: Lease, info: dict[str, Any]) -> bool:
        params = {"info": rows.dumps(info), **_fence(lease)}
        return await self._write(lambda c: c.execute(Q["set_progress"], params).rowcount > 0)

    async def complete(self, lease: Lease, result: Result, *, now: float) -> bool:
        params = {
            "result": rows.dumps(result.to_dict()),
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "cached_tokens": result.usage.cached_tokens,
            "now": now,
            **_fence(lease),
        }
        return await self._write(lambda c: c.execute(Q["complete"], params).rowcount > 0)

    async def fail(self, lease: Lease, error: JobError, *, now: float, retry: bool) -> bool:
        params = {
            "error": rows.dumps(error.to_dict()),
            "retry": int(retry),
            "now": now,
            **_fence(lease),
        }
        return await self._write(lambda c: c.execute(Q["fail"], params).rowcount > 0)

    async def requeue(self, lease: Lease) -> bool:
        params = _fence(lease)
        return await self._write(lambda c: c.execute(Q["requeue"], params).rowcount > 0)

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
        params = {
            "id": job_id,
            "state": state.value,
            "error": rows.dumps(error.to_dict()) if error else None,
            "now": now,
        }

        def run(conn: sqlite3.Connection) -> tuple[Job, Job] | None:
            row = conn.execute(Q["get_job"], {"id": job_id, "tenant": tenant}).fetchone()
            if row is None:
                return None
            before = rows.row_to_job(row)
            updated = conn.execute(Q["finish"], params).fetchone()
            return before, rows.row_to_job(updated) if updated else before

        return await self._write(run)

    async def cancel_queued(self, *, tenant: str, model: str, now: float) -> int:
        params = {"tenant": tenant, "model": model, "now": now}
        return await self._write(lambda c: c.execute(Q["cancel_queued"], params).rowcount)

    async def expire_overdue(self, *, now: float) -> list[str]:
        found = await self._write(lambda c: c.execute(Q["expire_overdue"], {"now": now}).fetchall())
        return [r["id"] for r in found]

    async def metrics(self, *, tenant: str, model: str | None) -> QueueMetrics:
        row = await self._read(
            lambda c: c.execute(Q["metrics"], {"tenant": tenant, "model": model}).fetchone()
        )
        return QueueMetrics(running=row["running"], waiting=row["waiting"], total=row["total"])

    # -- files and datasets --------------------------------------------------

    async def insert_file(self, record: FileRecord) -> FileRecord | None:
        params = rows.file_params(record)
        row = await self._write(lambda c: c.execute(Q["insert_file"], params).fetchone())
        return record.evolve(seq=int(row[0])) if row else None

    async def get_file(self, file_id: str, *, tenant: str) -> FileRecord | None:
        params = {"id": file_id, "tenant": tenant}
        row = await self._read(lambda c: c.execute(Q["get_file"], params).fetchone())
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
        found = await self._read(lambda c: c.execute(Q["list_files"], params).fetchall())
        return [rows.row_to_file(r) for r in found]

    async def update_file(self, record: FileRecord) -> bool:
        params = rows.file_params(record)
        return await self._write(lambda c: c.execute(Q["update_file"], params).rowcount > 0)

    async def delete_file(self, file_id: str, *, tenant: str) -> bool:
        params = {"id": file_id, "tenant": tenant}
        return await self._write(lambda c: c.execute(Q["delete_file"], params).rowcount > 0)

    # -- batches ------------------------------------------------------------------

    async def insert_batch(self, batch: Batch) -> tuple[Batch, bool]:
        params = rows.batch_params(batch)

        def run(conn: sqlite3.Connection) -> tuple[Batch, bool]:
            if batch.idempotency_key is not None:
                row = conn.execute(Q["find_batch_by_key"], params).fetchone()
                if row is not None:
                    return rows.row_to_batch(row), False
            try:
                seq = int(conn.execute(Q["insert_batch"], params).fetchone()[0])
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"a batch with id {batch.id} already exists", param="id") from exc
            return batch.evolve(seq=seq), True

        return await self._write(run)

    async def get_batch(self, batch_id: str, *, tenant: str | None) -> Batch | None:
        params = {"id": batch_id, "tenant": tenant}
        row = await self._read(lambda c: c.execute(Q["get_batch"], params).fetchone())
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
        found = await self._read(lambda c: c.execute(Q["list_batches"], params).fetchall())
        return [rows.row_to_batch(r) for r in found]

    async def active_batches(
        self, *, now: float, limit: int, workflows: bool, after: int = 0
    ) -> list[Batch]:
        params = {"now": now, "limit": limit, "workflows": workflows, "after": after}
        found = await self._read(lambda c: c.execute(Q["active_batches"], params).fetchall())
        return [rows.row_to_batch(r) for r in found]

    async def lease_batch(self, batch: Batch, *, owner: str, now: float, until: float) -> bool:
        params = {
            "tenant": batch.tenant,
            "id": batch.id,
            "owner": owner,
            "now": now,
            "until": until,
        }
        return await self._write(lambda c: c.execute(Q["lease_batch"], params).rowcount > 0)

    async def update_batch(self, batch: Batch, *, expect: JobState) -> bool:
        params = {**rows.batch_params(batch), "expect": expect.value}

        def run(conn: sqlite3.Connection) -> bool:
            try:
                return conn.execute(Q["update_batch"], params).rowcount > 0
            except sqlite3.IntegrityError as exc:
                raise Conflict(
                    f"a batch with idempotency key {batch.idempotency_key!r} already exists",
                    param="idempotency_key",
                ) from exc

        return await self._write(run)

    async def count_open_batches(self, *, tenant: str) -> int:
        params = {"tenant": tenant}
        row = await self._read(lambda c: c.execute(Q["count_open_batches"], params).fetchone())
        return int(row[0])

    async def delete_batch(self, batch_id: str, *, tenant: str) -> bool:
        params = {"tenant": tenant, "id": batch_id, "batch_id": batch_id}

        def run(conn: sqlite3.Connection) -> bool:
            if conn.execute(Q["delete_batch"], params).rowcount == 0:
                return False
            conn.execute(Q["delete_batch_rows"], params)
            return True

        return await self._write(run)

    # -- batch rows ---------------------------------------------------------------

    async def insert_rows(self, rows: Sequence[Job]) -> None:
        if not rows:
            return
        params = [_job_params(row) for row in rows]
        await self._write(lambda c: c.executemany(Q["insert_row"], params).rowcount)

    async def release_rows(self, *, tenant: str, batch_id: str) -> int:
        return await self._in_chunks("release_rows", {"tenant": tenant, "batch_id": batch_id})

    async def _in_chunks(self, name: str, params: dict[str, Any]) -> int:
        """Run an update of a batch's rows that takes ``:chunk`` rows at a time until it
        runs out; each chunk is a write of its own, so other writes (claims, submits) go
        between them instead of waiting for a whole batch. Returns how many changed."""
        params = {**params, "chunk": ROW_CHUNK}
        total = 0
        while True:
            changed = await self._write(lambda c: c.execute(Q[name], params).rowcount)
            total += changed
            if changed < ROW_CHUNK:
                return total

    async def batch_counts(self, *, tenant: str, batch_id: str) -> BatchCounts:
        params = {"tenant": tenant, "batch_id": batch_id}
        found = await self._read(lambda c: c.execute(Q["batch_counts"], params).fetchall())
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
        found = await self._read(lambda c: c.execute(Q["batch_rows"], params).fetchall())
        return [rows.row_to_job(r) for r in found]

    async def duplicate_custom_ids(
        self, *, tenant: str, batch_id: str, limit: int
    ) -> list[tuple[str, int, int]]:
        params = {"tenant": tenant, "batch_id": batch_id, "limit": limit}
        found = await self._read(lambda c: c.execute(Q["duplicate_custom_ids"], params).fetchall())
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
        return await self._in_chunks("finish_rows", params)

    # -- API keys ---------------------------------------------------------------

    async def insert_key(self, key: ApiKey, *, key_hash: str) -> None:
        params = rows.key_params(key, key_hash)

        def run(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(Q["insert_key"], params)
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"a key named {key.name!r} already exists", param="name") from exc

        await self._write(run)

    async def find_key(self, key_hash: str) -> ApiKey | None:
        row = await self._read(
            lambda c: c.execute(Q["find_key"], {"key_hash": key_hash}).fetchone()
        )
        return rows.row_to_key(row) if row else None

    async def list_keys(self) -> list[ApiKey]:
        found = await self._read(lambda c: c.execute(Q["list_keys"]).fetchall())
        return [rows.row_to_key(r) for r in found]

    async def revoke_key(self, id_or_name: str, *, now: float) -> ApiKey | None:
        row = await self._write(
            lambda c: c.execute(Q["revoke_key"], {"key": id_or_name, "now": now}).fetchone()
        )
        return rows.row_to_key(row) if row else None


def _fence(lease: Lease) -> dict[str, Any]:
    return {"id": lease.job_id, "owner": lease.owner, "attempt": lease.attempt}


def _states(states: frozenset[JobState] | None) -> str | None:
    """A state filter as the JSON array the queries read with json_each (None: any)."""
    return rows.dumps(sorted(s.value for s in states)) if states is not None else None


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks; return the schema version.

    Refuses a database whose version is newer than this code knows.
    """
    migrations = load_migrations("sqlite")
    known = migrations[-1].version if migrations else 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        current = conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
        ).fetchone()[0]
        if current > known:
            raise StoreError(
                f"the database schema is version {current}, newer than this inferq knows "
                f"({known}); upgrade inferq"
            )
        for migration in migrations:
            if migration.version > current:
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return known


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (no semicolons inside literals)."""
    return [s.strip() for s in script.split(";") if s.strip() and not _only_comments(s)]


def _only_comments(chunk: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in chunk.splitlines())
