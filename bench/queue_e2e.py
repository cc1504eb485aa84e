"""End-to-end queue throughput: enqueue, claim, complete, in jobs per second.

Four systems, each doing the same no-op work in this one process, in
interleaved rounds (the order rotates each round, so drift hits all alike):

* **inferq-pg** and **inferq-sqlite**: the real composition root
  (:func:`inferq.runtime.open_runtime`: the store, ``JobService``, the real
  ``Worker``) with a fake-engine model (``token_delay`` 0, ``slots`` engine
  slots) from :class:`~inferq.engines.registry.ModelRegistry`. Jobs go in through
  ``JobService.submit`` (in-process: the question is the queue, not HTTP); the
  worker claims, runs the fake engine and completes them.
* **pgqueuer**: ``PgQueuer(AsyncpgDriver(connection))`` running its normal
  ``run()`` (batch size = engine slots) with a no-op entrypoint; jobs enqueued
  with ``Queries.enqueue`` on an asyncpg pool.
* **procrastinate**: one ``App`` on a ``PsycopgConnector`` pool, an async no-op
  task deferred with ``defer_async``, ``run_worker_async`` with concurrency =
  engine slots.

Each run gets a fresh state (a new PostgreSQL schema with the library's own
schema installed, or a new SQLite directory), starts the worker, then enqueues
``--jobs`` jobs from ``--concurrency`` concurrent producers (one job per call,
each carrying the same small chat request as payload) and waits until every job's
completion is committed (counted where each system writes it: ``store.complete``,
``Queries.log_jobs``, ``JobManager.finish_job``). jobs/s = jobs / (first enqueue
to last committed completion). Afterwards the database must hold every job as
succeeded.

Also reported per PostgreSQL run: commits and WAL syncs per job (from
``pg_stat_database`` and ``pg_stat_wal``, read after the system closed its
connections, so they count every client of the database and the server), and the
CPU of this process, of the PostgreSQL server processes and of everything else.

Claim latency (inferq only): the time of one ``store.claim`` call, (a) every call
the worker made during the measured runs (two per loop turn: interactive work
first, then any class), and (b) a separate loop on a fresh store: ``--claim-jobs``
queued jobs, then ``claim(limit=slots)`` and completing what it returned, until
the queue is empty, one call at a time.

Needs the bench extras (``pip install -e '.[bench]'``) and the PostgreSQL of
``TEST_DATABASE_URL`` (default: the local ``test`` database)::

    .venv/bin/python bench/queue_e2e.py [--jobs 5000] [--rounds 3] [--only inferq-pg]

Profile one system with py-spy::

    py-spy record -o queue.svg -- .venv/bin/python bench/queue_e2e.py --only inferq-pg \\
        --no-wait --no-doc --claim-jobs 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg

from _common import (
    NOISY,
    busy_cpu_seconds,
    cpu_seconds,
    machine,
    machine_line,
    percentile,
    table,
    update_doc,
    wait_until_quiet,
)
from inferq.api.dialects import DIALECTS
from inferq.blobs import MemoryBlobs
from inferq.config import Settings
from inferq.core.events import JobEvents
from inferq.core.models import Lease
from inferq.core.ports import ClaimOrder
from inferq.core.service import JobService
from inferq.core.states import ServiceClass
from inferq.core.work import ChatMessage, ChatRequest
from inferq.engines.base import AbortSignal, ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.runtime import open_runtime
from inferq.store.base import JobStore
from inferq.store.postgres import PostgresStore
from inferq.store.sqlite import SQLiteStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
MODEL = "fake"
TENANT = "bench"
REQUEST = ChatRequest(
    messages=(ChatMessage("user", "Summarize the plot of Hamlet in one line."),), max_tokens=4
)
PAYLOAD = REQUEST.to_dict()
PAYLOAD_BYTES = json.dumps(PAYLOAD).encode()
SYSTEMS = ("inferq-pg", "inferq-sqlite", "pgqueuer", "procrastinate")


# -- counting what each system commits -----------------------------------------------


class Completions:
    """Counts committed completions; ``done`` is set once ``target`` are in."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()

    def expect(self, target: int) -> None:
        self.count, self.target = 0, target
        self.done.clear()

    def add(self, n: int) -> None:
        self.count += n
        if self.count >= self.target:
            self.done.set()


def wrap_after(obj: Any, name: str, after: Callable[..., None]) -> None:
    """Replace ``obj.name`` (a coroutine method) by one that calls ``after(result, *args)``."""
    original = getattr(obj, name)

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        after(result, *args, **kwargs)
        return result

    setattr(obj, name, wrapped)


def time_calls(obj: Any, name: str, samples: list[float]) -> None:
    """Replace ``obj.name`` by one that appends each call's duration (s) to ``samples``."""
    original = getattr(obj, name)

    async def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            samples.append(time.perf_counter() - t0)

    setattr(obj, name, timed)


# -- PostgreSQL schemas --------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_schema(url: str) -> Any:
    """A new empty schema, dropped afterwards; yields its name."""
    schema = "bench_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield schema
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def count(url: str, schema: str, sql: str) -> int:
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


# -- the systems ---------------------------------------------------------------------


@dataclass
class Args:
    url: str
    slots: int
    pool: int


class System:
    """One queue, opened on fresh state; ``enqueue`` adds one no-op job."""

    name = ""

    def __init__(self, args: Args, completions: Completions) -> None:
        self.args = args
        self.completions = completions
        self.claim_times: list[float] = []
        self.stack = contextlib.AsyncExitStack()

    async def open(self) -> None:
        raise NotImplementedError

    async def enqueue(self) -> None:
        raise NotImplementedError

    async def verify(self, jobs: int) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        await self.stack.aclose()


def fake_registry(slots: int) -> ModelRegistry:
    spec = ModelSpec(
        name=MODEL, engine="fake", context_length=512, slots=slots, options={"token_delay": 0}
    )
    return ModelRegistry({MODEL: spec})


class Inferq(System):
    def __init__(self, args: Args, completions: Completions, backend: str) -> None:
        super().__init__(args, completions)
        self.backend = backend
        self.name = f"inferq-{backend}"
        self.store: JobStore | None = None
        self.jobs: JobService | None = None

    async def new_store(self) -> tuple[JobStore, Settings]:
        if self.backend == "pg":
            schema = await self.stack.enter_async_context(fresh_schema(self.args.url))
            store: JobStore = PostgresStore(
                self.args.url,
                max_connections=self.args.pool,
                server_settings={"search_path": schema},
            )
            return store, Settings(database_url=self.args.url, db_pool_max=self.args.pool)
        tmp = Path(tempfile.mkdtemp(prefix="inferq-bench-"))
        self.stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        return SQLiteStore(tmp / "inferq.db"), Settings(data_dir=tmp)

    async def open(self) -> None:
        store, settings = await self.new_store()
        wrap_after(store, "complete", lambda ok, *a, **k: self.completions.add(int(ok)))
        time_calls(store, "claim", self.claim_times)
        runtime = await self.stack.enter_async_context(
            open_runtime(
                settings,
                plugins=DIALECTS.plugins(),
                store=store,
                registry=fake_registry(self.args.slots),
                # the queue moves no bytes; without this a PostgreSQL run would open the
                # PostgreSQL blob store in the default schema
                blobs=MemoryBlobs(),
            )
        )
        self.store, self.jobs = store, runtime.jobs

    async def enqueue(self) -> None:
        assert self.jobs is not None
        await self.jobs.submit(tenant=TENANT, model=MODEL, request=REQUEST, origin="bench")

    async def verify(self, jobs: int) -> None:
        assert self.store is not None
        m = await self.store.metrics(tenant=TENANT, model=MODEL)
        if (m.total, m.running, m.waiting) != (jobs, 0, 0):
            raise SystemExit(f"{self.name}: {m} after {jobs} jobs")


class PgQueuerSystem(System):
    name = "pgqueuer"

    async def open(self) -> None:
        from pgqueuer import PgQueuer
        from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver
        from pgqueuer.models import Job
        from pgqueuer.queries import Queries

        self.schema = await self.stack.enter_async_context(fresh_schema(self.args.url))
        settings = {"search_path": self.schema}
        pool = await asyncpg.create_pool(
            self.args.url, min_size=1, max_size=self.args.pool, server_settings=settings
        )
        self.stack.push_async_callback(pool.close)
        self.producer = Queries(AsyncpgPoolDriver(pool))
        await self.producer.install()
        conn = await asyncpg.connect(self.args.url, server_settings=settings)
        self.stack.push_async_callback(conn.close)
        pgq = PgQueuer(AsyncpgDriver(conn))

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            pass

        def logged(_: None, statuses: list[tuple[Any, str, Any]]) -> None:
            self.completions.add(sum(status == "successful" for _, status, _ in statuses))

        assert pgq.queries is not None
        wrap_after(pgq.queries, "log_jobs", logged)
        task = asyncio.create_task(pgq.run(batch_size=self.args.slots))

        async def stop() -> None:
            pgq.shutdown.set()
            await task

        self.stack.push_async_callback(stop)

    async def enqueue(self) -> None:
        await self.producer.enqueue("noop", PAYLOAD_BYTES)

    async def verify(self, jobs: int) -> None:
        left = await count(self.args.url, self.schema, "SELECT count(*) FROM pgqueuer")
        done = await count(
            self.args.url,
            self.schema,
            "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'",
        )
        if (left, done) != (0, jobs):
            raise SystemExit(f"{self.name}: {left} jobs left, {done} logged successful")


class ProcrastinateSystem(System):
    name = "procrastinate"

    async def open(self) -> None:
        import procrastinate

        self.schema = await self.stack.enter_async_context(fresh_schema(self.args.url))
        connector = procrastinate.PsycopgConnector(
            conninfo=self.args.url,
            kwargs={"options": f"-c search_path={self.schema}"},
            min_size=1,
            max_size=self.args.pool,
        )
        app = procrastinate.App(connector=connector)

        @app.task(name="noop", queue="bench")
        async def noop(**payload: Any) -> None:
            pass

        self.task = noop
        await app.open_async()
        self.stack.push_async_callback(app.close_async)
        await app.schema_manager.apply_schema_async()

        def finished(_: None, job: Any, status: Any, delete_job: bool) -> None:
            self.completions.add(int(status == procrastinate.jobs.Status.SUCCEEDED))

        wrap_after(app.job_manager, "finish_job", finished)
        task = asyncio.create_task(
            app.run_worker_async(concurrency=self.args.slots, install_signal_handlers=False)
        )

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self.stack.push_async_callback(stop)

    async def enqueue(self) -> None:
        await self.task.defer_async(**PAYLOAD)

    async def verify(self, jobs: int) -> None:
        done = await count(
            self.args.url,
            self.schema,
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
        )
        if done != jobs:
            raise SystemExit(f"{self.name}: {done} of {jobs} jobs succeeded")


def make_system(name: str, args: Args, completions: Completions) -> System:
    if name == "inferq-pg":
        return Inferq(args, completions, "pg")
    if name == "inferq-sqlite":
        return Inferq(args, completions, "sqlite")
    if name == "pgqueuer":
        return PgQueuerSystem(args, completions)
    return ProcrastinateSystem(args, completions)


# -- one run ---------------------------------------------------------------------------


def postgres_cpu() -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL server process."""
    used = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            used[int(entry)] = cpu_seconds(int(entry))
        except OSError:
            continue
    return used


async def pg_counters(url: str) -> tuple[int, int]:
    """Commits in the database and WAL syncs of the server, so far."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),"
            " (SELECT wal_sync FROM pg_stat_wal)"
        )
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


@dataclass
class Run:
    system: str
    jobs: int
    seconds: float
    enqueue_seconds: float
    own_cpu: float  # cores, this process (all threads)
    pg_cpu: float  # cores, PostgreSQL server processes
    other_cpu: float  # cores, everything else
    commits: float = 0.0  # PostgreSQL commits per job (whole database)
    wal_syncs: float = 0.0  # WAL syncs per job (whole server)
    claim_times: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


async def produce(jobs: int, concurrency: int, enqueue: Callable[[], Awaitable[None]]) -> None:
    left = jobs

    async def producer() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await enqueue()

    await asyncio.gather(*(producer() for _ in range(min(concurrency, jobs))))


async def run_once(name: str, args: Args, jobs: int, concurrency: int, timeout: float) -> Run:
    """One measured run on fresh state; every step of it within ``timeout`` seconds."""
    completions = Completions()
    system = make_system(name, args, completions)
    postgres = name != "inferq-sqlite"
    step = "opening"
    try:
        async with asyncio.timeout(timeout):
            try:
                await system.open()
                await asyncio.sleep(0.2)  # let the worker reach its idle wait
                system.claim_times.clear()
                counters0 = await pg_counters(args.url) if postgres else (0, 0)
                completions.expect(jobs)
                pg0, busy0, cpu0 = postgres_cpu(), busy_cpu_seconds(), time.process_time()
                t0 = time.perf_counter()
                step = "enqueueing"
                await produce(jobs, concurrency, system.enqueue)
                enqueued = time.perf_counter() - t0
                step = "draining"
                await completions.done.wait()
                wall = time.perf_counter() - t0
                own = (time.process_time() - cpu0) / wall
                pg1 = postgres_cpu()
                pg = sum(used - pg0.get(pid, 0.0) for pid, used in pg1.items()) / wall
                other = max(0.0, (busy_cpu_seconds() - busy0) / wall - own - pg)
                claims = list(system.claim_times)
                step = "verifying"
                await system.verify(jobs)
            finally:
                step = f"closing (after {step})"
                await system.close()
            commits = syncs = 0.0
            if postgres:
                # Server processes report their counts when their connection closes.
                await asyncio.sleep(0.3)
                counters1 = await pg_counters(args.url)
                commits, syncs = ((b - a) / jobs for a, b in zip(counters0, counters1, strict=True))
    except TimeoutError:
        raise SystemExit(
            f"{name}: stuck {step} ({completions.count} of {jobs} jobs completed) "
            f"after {timeout:g} s"
        ) from None
    return Run(name, jobs, wall, enqueued, own, pg, other, commits, syncs, claims)


async def claim_loop(backend: str, args: Args, jobs: int) -> list[float]:
    """Isolated ``store.claim(limit=slots)`` latencies on a queue of ``jobs`` jobs."""
    system = Inferq(args, Completions(), backend)
    try:
        store, _ = await system.new_store()
        await store.open()
        system.stack.push_async_callback(store.close)
        registry = fake_registry(args.slots)
        service = JobService(store=store, models=registry, events=JobEvents())
        engine = registry.get(MODEL)
        await produce(
            jobs,
            16,
            lambda: service.submit(tenant=TENANT, model=MODEL, request=REQUEST, origin="bench"),
        )
        samples: list[float] = []
        while True:
            t0 = time.perf_counter()
            order = ClaimOrder(owner="bench", limit=args.slots, lease_seconds=30.0, models=[MODEL])
            claimed = await store.claim(order, now=time.time(), max_class=ServiceClass.BATCH)
            samples.append(time.perf_counter() - t0)
            if not claimed:
                break
            for job in claimed:
                result = await engine.generate(job.request, abort=AbortSignal())
                lease = Lease(job.id, "bench", job.attempt)
                if not await store.complete(lease, result, now=time.time()):
                    raise SystemExit(f"inferq-{backend}: complete failed in the claim loop")
        return samples[:-1]  # the last one found the queue empty
    finally:
        await system.close()


# -- the report ------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def median_run(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.rate)
    return ordered[(len(ordered) - 1) // 2]


async def main_async(opts: argparse.Namespace) -> None:
    # Stopped (a timeout's SIGTERM, say): unwind, so every fresh schema is dropped.
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    args = Args(url=opts.database_url, slots=opts.slots, pool=opts.pool)
    systems = opts.only or list(SYSTEMS)
    info = machine()
    print(machine_line(info))
    print(f"pgqueuer {version('pgqueuer')}, procrastinate {version('procrastinate')}")
    if opts.warmup:
        for name in systems:
            await run_once(name, args, opts.warmup, opts.concurrency, opts.timeout)
        print(f"warm-up done ({opts.warmup} jobs per system)")
    runs: dict[str, list[Run]] = {name: [] for name in systems}
    claims: dict[str, list[float]] = {}
    quiet: list[float] = []
    for r in range(opts.rounds):
        if not opts.no_wait:
            quiet.append(await asyncio.to_thread(wait_until_quiet))
        order = systems[r % len(systems) :] + systems[: r % len(systems)]
        for name in order:
            run = await run_once(name, args, opts.jobs, opts.concurrency, opts.timeout)
            runs[name].append(run)
            print(
                f"  round {r + 1} {name:14s} {run.rate:8.0f} jobs/s  ({run.seconds:.2f} s, "
                f"enqueue done at {run.enqueue_seconds:.2f} s)  CPU: bench "
                f"{run.own_cpu:.2f}, postgres {run.pg_cpu:.2f}, other {run.other_cpu:.2f}; "
                f"per job: {run.commits:.2f} commits, {run.wal_syncs:.2f} WAL syncs",
                flush=True,
            )
        for backend in ("pg", "sqlite"):
            if f"inferq-{backend}" in systems and opts.claim_jobs:
                samples = await claim_loop(backend, args, opts.claim_jobs)
                claims.setdefault(backend, []).extend(samples)
    if opts.no_report:
        return

    rows = []
    for name in systems:
        best = median_run(runs[name])
        rates = [r.rate for r in runs[name]]
        pg = name != "inferq-sqlite"
        rows.append([
            name, f"{best.rate:,.0f}", ", ".join(f"{x:,.0f}" for x in rates),
            f"{best.seconds:.2f}", f"{best.enqueue_seconds:.2f}",
            f"{best.commits:.2f}" if pg else "-", f"{best.wal_syncs:.2f}" if pg else "-",
            f"{best.own_cpu:.2f}", f"{best.pg_cpu:.2f}", f"{best.other_cpu:.2f}",
        ])  # fmt: skip
    header = [
        "system", "jobs/s (median round)", "jobs/s, every round", "run s", "enqueued by s",
        "commits / job", "WAL syncs / job", "bench CPU", "PostgreSQL CPU", "other CPU",
    ]  # fmt: skip
    result_table = table(header, rows)
    claim_rows = []
    for backend in ("pg", "sqlite"):
        name = f"inferq-{backend}"
        if name not in systems:
            continue
        loaded = [t for run in runs[name] for t in run.claim_times]
        jobs = sum(run.jobs for run in runs[name])
        claim_rows.append([
            name, f"the worker's loop, during the runs ({len(loaded) / jobs:.2f} calls per job)",
            f"{len(loaded):,}", ms(percentile(loaded, 50)), ms(percentile(loaded, 99)),
            ms(statistics.fmean(loaded)),
        ])  # fmt: skip
        iso = claims.get(backend, [])
        if iso:
            claim_rows.append([
                name, f"a separate loop: limit {opts.slots}, {opts.claim_jobs:,} jobs queued",
                f"{len(iso):,}", ms(percentile(iso, 50)), ms(percentile(iso, 99)),
                ms(statistics.fmean(iso)),
            ])  # fmt: skip
    claim_header = ["store", "one store.claim call, timed in", "calls", "p50 ms", "p99 ms",
                    "mean ms"]  # fmt: skip
    claim_table = table(claim_header, claim_rows)
    print()
    print(result_table)
    print()
    print(claim_table)
    rate = {name: median_run(rs).rate for name, rs in runs.items()}
    summary = ""
    if "inferq-pg" in rate and "pgqueuer" in rate:
        ratio = rate["inferq-pg"] / rate["pgqueuer"]
        verdict = "meets" if ratio >= 1 else "MISSES"
        summary = (
            f"inferq on PostgreSQL: {rate['inferq-pg']:,.0f} jobs/s, {ratio:.2f}x PgQueuer's "
            f"{rate['pgqueuer']:,.0f} ({verdict} the target: at least as fast as PgQueuer)."
        )
        print(summary)
    if opts.no_doc:
        return
    noisiest = max(r.other_cpu for rs in runs.values() for r in rs)
    if noisiest > NOISY and not opts.force_doc:
        print(f"not updating the docs: other processes used up to {noisiest:.2f} cores")
        return
    seen = ", ".join(f"{q:.2f}" for q in quiet) or "not checked (--no-wait)"
    body = "\n".join([
        machine_line(info),
        "",
        f"PgQueuer {version('pgqueuer')}; Procrastinate {version('procrastinate')} on "
        f"psycopg {version('psycopg')} ({psycopg_impl()}); asyncpg {version('asyncpg')}; "
        f"PostgreSQL {opts.server_version} on the same machine (fsync and synchronous_commit "
        f"on); SQLite {sqlite3.sqlite_version} (WAL, synchronous FULL).",
        "",
        f"{opts.rounds} rounds of {opts.jobs:,} jobs per system, the order rotating each "
        f"round, after a warm-up run of {opts.warmup:,} jobs each; {opts.concurrency} "
        f"concurrent producers, one job per call; {opts.slots} engine slots (inferq), batch "
        f"size (PgQueuer), concurrency (Procrastinate); pools of {opts.pool} connections; "
        f"{opts.loop} event loop. Other processes' CPU before each round (cores): {seen}. "
        "CPU columns are cores used during the median round; commits count every "
        "transaction in the database, WAL syncs every flush of the server.",
        "",
        result_table,
        "",
        claim_table,
        "",
        summary,
    ])  # fmt: skip
    update_doc("queue_e2e", body)


def psycopg_impl() -> str:
    try:
        import psycopg

        return f"{psycopg.pq.__impl__} implementation"
    except ImportError:
        return "not installed"


async def server_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version")).split()[0]
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per measured run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=500, help="jobs per system, unmeasured")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent producers")
    parser.add_argument("--slots", type=int, default=10, help="engine slots / batch size")
    parser.add_argument("--pool", type=int, default=10, help="PostgreSQL pool size")
    parser.add_argument("--claim-jobs", type=int, default=2000, help="jobs in the claim loop")
    parser.add_argument("--timeout", type=float, default=300.0, help="limit per run (s)")
    parser.add_argument("--only", action="append", choices=SYSTEMS, help="repeatable")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--no-wait", action="store_true", help="skip the quiet-machine wait")
    parser.add_argument("--no-report", action="store_true", help="only print the rounds")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument(
        "--force-doc", action="store_true", help="update the docs even from a noisy run"
    )
    opts = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # "App is instantiated in the main Python module": matters only to workers that
    # import the tasks in another process.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    run: Callable[[Awaitable[Any]], Any] = asyncio.run  # type: ignore[assignment]
    if opts.loop == "uvloop":
        import uvloop

        run = uvloop.run
    opts.server_version = run(server_version(opts.database_url))
    try:
        run(main_async(opts))
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise SystemExit("stopped") from None


if __name__ == "__main__":
    main()
