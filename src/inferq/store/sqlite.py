"""SQLite: the default store, for one machine (:class:`SQLiteStore` over :class:`SQLiteExecutor`).

* WAL journal, so readers never block the writer and the writer never blocks them.
* One writer connection on its own thread (:mod:`inferq.store.sqlite_writer`). Writes
  from every request queue up and are committed together in one ``BEGIN IMMEDIATE``
  transaction (group commit): each caller's future resolves only after the COMMIT, so
  an acknowledged job is on disk, and many concurrent submits share one fsync.
* Reads (the statements that start with SELECT, outside :meth:`SQLiteExecutor.atomic`)
  use per-thread connections from asyncio's default thread pool.
* Other processes (the CLI while a server runs, the API processes of ``serve
  --workers N``) open the same file safely; ``busy_timeout`` makes them wait for the
  lock instead of failing, and their writers take turns (:class:`WriteTurns`), so
  that one busy process does not keep the others waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from inferq.core.errors import StoreUnavailable
from inferq.core.fairness import Charge, Pick
from inferq.core.models import Job
from inferq.core.ports import ClaimOrder
from inferq.core.states import ServiceClass
from inferq.store import rows
from inferq.store.executor import Params, Step, Steps, count, drive, many, one
from inferq.store.fair import fair_claim
from inferq.store.rows import Row
from inferq.store.sql import check_version, first_keyword, load_migrations, load_queries
from inferq.store.sql_store import SqlStore, claim_params, claimed_jobs, job_exists
from inferq.store.sqlite_bus import Bus, available
from inferq.store.sqlite_writer import Write, Writer, WriteTurns

T = TypeVar("T")
Q = load_queries("sqlite")
#: the queries that only read: they go to a reader connection, not the writer
READS = frozenset(name for name, sql in Q.items() if first_keyword(sql) == "SELECT")
#: the queries that read a parameter as JSON (json_each(:ids), …): their list parameters
#: are sent as JSON arrays; no other query can take a list, so theirs go as they are
TAKES_LISTS = frozenset(name for name, sql in Q.items() if re.search(r"json_\w+\(\s*:", sql))
# for insert_rows, whose argument is named rows
_job_params, _dumps = rows.job_params, rows.dumps
BUSY_TIMEOUT_MS = 10_000
#: how many of a batch's rows release_rows and finish_rows change in one write
ROW_CHUNK = 5_000
#: the most UTF-8 bytes of rows one insert_rows statement carries (its JSON array): far
#: under SQLite's limit on one value (a billion bytes), whatever the rows' sizes
ROWS_BYTES = 32 * 1024 * 1024


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


class SQLiteExecutor:
    """Runs the SQLite queries: writes on the writer thread, reads on per-thread readers."""

    def __init__(self, path: Path, *, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous
        self._writer: Writer | None = None
        self._bus: Bus | None = None
        self._turns: WriteTurns | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        #: signalled when a read ends: close waits for the reads in flight, whose
        #: connections it must not close under them (sqlite3 would crash the process)
        self._reads_ended = threading.Condition(self._readers_lock)
        self._reading = 0
        self._closing = False

    async def open(self) -> None:
        self._closing = False
        await asyncio.to_thread(_private_files, self.path)
        conn = await asyncio.to_thread(_connect, self.path, synchronous=self.synchronous)
        await asyncio.to_thread(migrate, conn)
        self._bus = Bus(self.path) if available() else None
        self._turns = WriteTurns(self.path)
        self._writer = Writer(conn, self._bus, self._turns)
        self._writer.start()

    async def close(self) -> None:
        with self._readers_lock:
            self._closing = True  # no read starts from now on
            for conn in self._readers:
                conn.interrupt()  # a read in flight stops at its next step
        if self._writer is not None:
            self._writer.inbox.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer.conn.close()
            self._writer = None
        if self._turns is not None:
            self._turns.close()
            self._turns = None
        if self._bus is not None:
            self._bus.close()
            self._bus = None
        await asyncio.to_thread(self._close_readers)

    def _close_readers(self) -> None:
        """Close the readers once no read is in flight: a read whose caller was
        cancelled still runs in its thread, and closing its connection under it is a
        use after free in SQLite."""
        with self._reads_ended:
            self._reads_ended.wait_for(lambda: self._reading == 0)
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._local = threading.local()  # a later open connects afresh

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, single: bool = False) -> T:
        """Run ``fn`` on the writer thread; its outcome once its group has committed.
        ``single``: ``fn`` runs one statement (see :class:`Write`)."""
        if self._writer is None:
            raise StoreUnavailable("the SQLite store is not open")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writer.inbox.put(Write(fn, fut, single))
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
            with self._readers_lock:
                if self._closing:
                    raise StoreUnavailable("the SQLite store is closing")
                self._reading += 1
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite read failed: {exc}") from exc
            finally:
                with self._reads_ended:
                    self._reading -= 1
                    if self._closing:
                        self._reads_ended.notify_all()

        return await asyncio.to_thread(run)

    # One statement: a read on a reader, anything else as a write of its own. These
    # three run for every job several times, so they go straight to the connection.

    async def fetch_one(self, query: str, params: Params) -> Row | None:
        run = partial(_fetch_one, Q[query], _encode(query, params))
        row: Row | None = await (
            self._read(run) if query in READS else self._write(run, single=True)
        )
        return row

    async def fetch_all(self, query: str, params: Params) -> list[Row]:
        run = partial(_fetch_all, Q[query], _encode(query, params))
        found: list[Row] = await (
            self._read(run) if query in READS else self._write(run, single=True)
        )
        return found

    async def execute(self, query: str, params: Params) -> int:
        run = partial(_count, Q[query], _encode(query, params))
        changed: int = await self._write(run, single=True)
        return changed

    async def atomic(self, steps: Steps[T]) -> T:
        return await self._write(lambda conn: drive(steps, lambda step: _run(conn, step)))

    @property
    def relay(self) -> Bus | None:
        """The channel to the other processes on this file (once open, on Linux)."""
        return self._bus

    async def listen(
        self, *, on_submitted: Callable[[], None], on_ended: Callable[[str], None]
    ) -> bool:
        """Wake-ups from the other processes on this file (:mod:`inferq.store.sqlite_bus`);
        False where the platform has no channel (everyone polls)."""
        if self._bus is None:
            return False
        self._bus.listen(on_submitted, on_ended)
        return True


def _run(conn: sqlite3.Connection, step: Step) -> Any:
    sql, params = Q[step.query], _encode(step.query, step.params)
    if step.result == "one":
        return _fetch_one(sql, params, conn)
    if step.result == "all":
        return _fetch_all(sql, params, conn)
    return _count(sql, params, conn)


def _fetch_one(sql: str, params: Params, conn: sqlite3.Connection) -> Row | None:
    row: Row | None = conn.execute(sql, params).fetchone()
    return row


def _fetch_all(sql: str, params: Params, conn: sqlite3.Connection) -> list[Row]:
    return conn.execute(sql, params).fetchall()


def _count(sql: str, params: Params, conn: sqlite3.Connection) -> int:
    return conn.execute(sql, params).rowcount


def _encode(query: str, params: Params) -> Params:
    """List parameters as the JSON arrays the queries read with json_each."""
    if query not in TAKES_LISTS:
        return params
    return {k: rows.dumps(v) if isinstance(v, list) else v for k, v in params.items()}


class SQLiteStore(SqlStore[SQLiteExecutor]):
    """The store on a SQLite file."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        super().__init__(SQLiteExecutor(Path(path), synchronous=synchronous))

    @property
    def path(self) -> Path:
        return self.db.path

    async def _claim(self, params: Params) -> list[Row]:
        if self._rescues.due(params):
            return await self.db.atomic(_claim(params, rescue=True))
        return await self.db.fetch_all("claim", {**params, "rescue": False})

    async def insert_and_claim(
        self, job: Job, order: ClaimOrder, *, now: float
    ) -> tuple[Job, list[Job]]:
        """The insert and the claim in one transaction: one commit for both."""
        params = claim_params(order, now=now, max_class=ServiceClass.BATCH)
        rescue = self._rescues.due(params)
        claim = _claim_fair(params, rescue=rescue) if order.fair else _claim(params, rescue=rescue)
        seq, found = await self.db.atomic(_insert_then(job, claim))
        return job.evolve(seq=seq), claimed_jobs(found, fair=order.fair)

    async def _claim_fair(self, params: Params) -> list[Row]:
        return await self.db.atomic(_claim_fair(params, rescue=self._rescues.due(params)))

    async def insert_rows(self, rows: Sequence[Job]) -> None:
        # as JSON arrays of at most ROWS_BYTES, one statement each: a chunk of large rows
        # (a line may be 8 MiB) would be too big for one
        for array in _arrays(_dumps(_job_params(row)).encode() for row in rows):
            await self.db.execute("insert_rows", {"rows": array})

    async def _change_rows(self, query: str, params: Params) -> int:
        """Run the update ``:chunk`` rows at a time until it runs out; each chunk is a
        write of its own, so other writes (claims, submits) go between them instead of
        waiting for a whole batch. Returns how many changed."""
        params = {**params, "chunk": ROW_CHUNK}
        total = 0
        while True:
            changed = await self.db.execute(query, params)
            total += changed
            if changed < ROW_CHUNK:
                return total


def _arrays(items: Iterable[bytes]) -> Iterator[str]:
    """JSON arrays of the encoded ``items``, in order, each at most :data:`ROWS_BYTES`
    long (or one item, when that alone is longer)."""
    part: list[bytes] = []
    size = 2
    for item in items:
        if part and size + len(item) + 1 > ROWS_BYTES:
            yield (b"[" + b",".join(part) + b"]").decode()
            part, size = [], 2
        part.append(item)
        size += len(item) + 1
    if part:
        yield (b"[" + b",".join(part) + b"]").decode()


def _insert_then(job: Job, claim: Steps[list[Row]]) -> Steps[tuple[int, list[Row]]]:
    """Insert ``job`` (its seq), then the claim's steps (their rows)."""
    row = yield one("insert_job", rows.job_params(job))
    if row is None:  # ON CONFLICT (id) DO NOTHING
        raise job_exists(job)
    found: list[Row] = yield from claim
    return int(row["seq"]), found


def _claim(params: Params, *, rescue: bool) -> Steps[list[Row]]:
    """The claim, one transaction; with ``rescue``, the exhausted leases failed first
    and the expired ones claimed with the queued jobs."""
    if rescue:
        yield count("fail_exhausted_leases", {"now": params["now"]})
    claimed: list[Row] = yield many("claim", {**params, "rescue": rescue})
    return claimed


def _claim_fair(params: Params, *, rescue: bool) -> Steps[list[Row]]:
    """The fair claim, one transaction; with ``rescue``, the exhausted leases failed
    and the expired ones claimed first."""
    if rescue:
        yield count("fail_exhausted_leases", {"now": params["now"]})
    claimed: list[Row] = yield from fair_claim(params, take=_take, charge=_charge, rescue=rescue)
    return claimed


def _take(picks: Sequence[Pick], params: Params) -> Steps[list[Row]]:
    """One statement per tenant (no LATERAL here)."""
    taken: list[Row] = []
    for pick in picks:
        wanted = {"tenant": pick.tenant, "service_class": pick.service_class}
        taken += yield many("claim_tenant", {**params, **wanted, "quota": pick.count})
    return taken


def _charge(charges: Sequence[Charge]) -> Steps[None]:
    for c in charges:
        yield count("charge_share", {"tenant": c.tenant, "floor": c.floor, "amount": c.amount})


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks; return the schema version.

    Refuses a database whose version is newer than this code knows.
    """
    migrations = load_migrations("sqlite")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        known = check_version(max(applied, default=0), migrations)
        # every one not applied yet, an older number landed after a newer one included
        for migration in migrations:
            if migration.version not in applied:
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
    """Split a migration script into statements, a trigger's body (``BEGIN … END;``)
    kept whole: a statement ends at the first ``;`` that completes it."""
    found: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if not _only_comments(pending.removesuffix(";")):
                found.append(pending.strip().removesuffix(";").strip())
            pending = ""
    if pending.removesuffix(";").strip() and not _only_comments(pending.removesuffix(";")):
        found.append(pending.strip().removesuffix(";").strip())
    return found


def _only_comments(chunk: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in chunk.splitlines())
