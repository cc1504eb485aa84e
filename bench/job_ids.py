"""Job ids and the store's index: random (version 4) against time-ordered (version 7) UUIDs.

A job's id is a key of the unique index on ``jobs.id``. Random ids land on random pages
of it, so a group of submits committed together changes a page of the index for each,
and every changed page is written again (SQLite's WAL, PostgreSQL's WAL with its full
page images); ids of one moment land on one page. Each side opens a fresh store (a real
:class:`SQLiteStore`, its writer thread, ``synchronous = FULL``; a
:class:`PostgresStore` on a fresh schema), fills it with ``--existing`` queued jobs with
ids of its kind (inserted in bulk), then times ``--inserts`` more through
``insert_job``, ``--concurrency`` at a time, as concurrent submits reach the store. It
reports, per insert: the wall time, this process's CPU (the event loop and SQLite's
writer thread) and the whole machine's busy CPU (with PostgreSQL's own processes). The
kinds alternate (v4, v7, v7, v4, ...), ``--rounds`` sides of each; the table shows each
kind's median side.

    .venv/bin/python bench/job_ids.py [--existing 300000] [--inserts 10000] [--rounds 2]
        [--store sqlite] [--no-doc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from _common import busy_cpu_seconds, machine, machine_line, publish, table
from inferq.core import ids
from inferq.core.models import Job
from inferq.store.postgres import PostgresStore
from inferq.store.sql_store import SqlStore
from inferq.store.sqlite import SQLiteStore
from store_busy_loop import job as queued_job

INPUTS = {
    "messages": [{"role": "user", "content": "Summarize the plot of Hamlet in one line."}],
    "max_tokens": 32,
}
KINDS: dict[str, Callable[[], str]] = {"v4": ids.new_uuid, "v7": ids.new_uuid7}
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
FILL_CHUNK = 2000


def job(job_id: str) -> Job:
    """``store_busy_loop``'s queued chat job under ``job_id``, with a submit's inputs."""
    return queued_job(id=job_id, inputs=INPUTS)


@contextlib.asynccontextmanager
async def opened(kind: str, url: str) -> AsyncIterator[SqlStore[Any]]:
    """A fresh store of ``kind`` (sqlite or postgres), closed and removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp:
            store: SqlStore[Any] = SQLiteStore(Path(tmp) / "inferq.db")
            await store.open()
            try:
                yield store
            finally:
                await store.close()
        return
    schema = "bench_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        store = PostgresStore(url, max_connections=16, server_settings={"search_path": schema})
        await store.open()
        try:
            yield store
        finally:
            await store.close()
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


async def side(store_kind: str, id_kind: str, args: argparse.Namespace) -> dict[str, float]:
    new_id = KINDS[id_kind]
    async with opened(store_kind, args.database_url) as store:
        for start in range(0, args.existing, FILL_CHUNK):
            n = min(FILL_CHUNK, args.existing - start)
            await store.insert_rows([job(new_id()) for _ in range(n)])
        todo = [job(new_id()) for _ in range(args.inserts)]
        limit = asyncio.Semaphore(args.concurrency)

        async def insert(one: Job) -> None:
            async with limit:
                await store.insert_job(one)

        cpu0, busy0, t0 = time.process_time(), busy_cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(insert(one) for one in todo))
        wall = time.perf_counter() - t0
        cpu, busy = time.process_time() - cpu0, busy_cpu_seconds() - busy0
    per = 1e6 / args.inserts
    return {"wall_us": wall * per, "cpu_us": cpu * per, "busy_us": busy * per}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--existing", type=int, default=300_000, help="jobs stored first")
    parser.add_argument("--inserts", type=int, default=10_000, help="jobs inserted, timed")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="sides of each kind")
    parser.add_argument("--store", action="append", choices=("sqlite", "postgres"))
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    info = machine()
    print(machine_line(info), flush=True)
    stores = args.store or ["sqlite", "postgres"]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for store_kind in stores:
        for n in range(args.rounds):
            for id_kind in ("v4", "v7") if n % 2 == 0 else ("v7", "v4"):
                r = uvloop.run(side(store_kind, id_kind, args))
                results.setdefault((store_kind, id_kind), []).append(r)
                print(
                    f"  {store_kind:8s} {id_kind}: wall {r['wall_us']:6.1f} µs, process CPU "
                    f"{r['cpu_us']:6.1f} µs, machine CPU {r['busy_us']:6.1f} µs per insert",
                    flush=True,
                )
    header = ["store", "ids", "wall µs per insert", "process CPU µs", "machine CPU µs",
              "wall, each side"]  # fmt: skip
    rows = []
    for (store_kind, id_kind), runs in results.items():
        mid = sorted(runs, key=lambda r: r["wall_us"])[(len(runs) - 1) // 2]
        rows.append([
            store_kind, id_kind, f"{mid['wall_us']:.1f}", f"{mid['cpu_us']:.1f}",
            f"{mid['busy_us']:.1f}", ", ".join(f"{r['wall_us']:.1f}" for r in runs),
        ])  # fmt: skip
    result = table(header, rows)
    settings = (
        f"{args.existing:,} jobs stored first, {args.inserts:,} inserted through insert_job "
        f"{args.concurrency} at a time; each kind's median side of {args.rounds}."
    )
    publish("job_ids", info, settings, result, doc=not args.no_doc)


if __name__ == "__main__":
    main()
