"""What the webhook outbox costs the queue: jobs completed per second, three ways.

* **no triggers**: the outbox triggers of migration 0005 dropped (the store as before
  webhooks);
* **no endpoint**: the triggers in place, the tenant without an endpoint (each terminal
  change pays one indexed ``EXISTS`` on ``webhook_endpoints``);
* **endpoint**: the tenant has an endpoint (each completion also inserts its outbox row).

Each run: a fresh store (a new SQLite file, a new PostgreSQL schema), ``--jobs`` jobs
inserted and claimed, then completed by ``--concurrency`` concurrent callers of
``store.complete``; jobs/s = jobs / the completion phase. The three ways run in
interleaved rounds (the order rotates), and the report gives each median as a ratio
to "no triggers" within the same run::

    .venv/bin/python bench/webhook_outbox.py [--jobs 2000] [--rounds 3] [--only postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import asyncpg

from inferq.core.models import Job, Lease
from inferq.core.ports import ClaimOrder
from inferq.core.states import JobState, ServiceClass
from inferq.core.webhooks import Endpoint
from inferq.core.work import ChatMessage, ChatRequest, ChatResult, Usage
from inferq.store.base import JobStore
from inferq.store.postgres import PostgresStore
from inferq.store.sqlite import SQLiteStore

MODES = ("no triggers", "no endpoint", "endpoint")
DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
RESULT = ChatResult("ok", "stop", Usage(prompt_tokens=3, completion_tokens=1))


@asynccontextmanager
async def sqlite_store(drop: bool) -> AsyncIterator[JobStore]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "jobs.db"
        store = SQLiteStore(path)
        await store.open()
        if drop:
            with sqlite3.connect(path) as conn:
                conn.execute("DROP TRIGGER webhook_job_ended")
        try:
            yield store
        finally:
            await store.close()


@asynccontextmanager
async def postgres_store(drop: bool) -> AsyncIterator[JobStore]:
    schema = "bench_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(DATABASE_URL)
    await admin.execute(f"CREATE SCHEMA {schema}")
    store = PostgresStore(DATABASE_URL, server_settings={"search_path": schema})
    try:
        await store.open()
        if drop:
            await admin.execute(f"DROP TRIGGER webhook_job_ended ON {schema}.jobs")
        yield store
    finally:
        await store.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


def job() -> Job:
    return Job(
        id=str(uuid.uuid4()), tenant="t", model="m", origin="together",
        service_class=ServiceClass.ASYNC, priority=0, state=JobState.QUEUED,
        request=ChatRequest(messages=(ChatMessage("user", "hi"),), max_tokens=4),
        created_at=time.time(),
    )  # fmt: skip


async def one_run(
    opened: Callable[[bool], AbstractAsyncContextManager[JobStore]],
    mode: str,
    jobs: int,
    concurrency: int,
) -> float:
    async with opened(mode == "no triggers") as store:
        if mode == "endpoint":
            endpoint = Endpoint(
                id="we_1", tenant="t", url="https://example.com/h", events=(),
                secret="whsec_c2VjcmV0", created_at=time.time(),
            )  # fmt: skip
            await store.insert_endpoint(endpoint)
        for _ in range(jobs):
            await store.insert_job(job())
        claimed = await store.claim(
            ClaimOrder(owner="w", limit=jobs, lease_seconds=600), now=time.time()
        )
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for j in claimed:
            queue.put_nowait(j)

        async def completer() -> None:
            while not queue.empty():
                j = queue.get_nowait()
                assert await store.complete(Lease(j.id, "w", j.attempt), RESULT, now=time.time())

        started = time.perf_counter()
        await asyncio.gather(*(completer() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        outbox = len(await store.outbox(limit=jobs + 1))
        assert outbox == (jobs if mode == "endpoint" else 0), (mode, outbox)
        return jobs / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    args = parser.parse_args()
    for name, opened in (("sqlite", sqlite_store), ("postgres", postgres_store)):
        if args.only not in (None, name):
            continue
        rates: dict[str, list[float]] = {m: [] for m in MODES}
        for r in range(args.rounds):
            order = MODES[r % 3 :] + MODES[: r % 3]
            for mode in order:
                rates[mode].append(await one_run(opened, mode, args.jobs, args.concurrency))
        base = statistics.median(rates["no triggers"])
        print(f"{name}: completions/s, median of {args.rounds} (ratio to no triggers)")
        for mode in MODES:
            median = statistics.median(rates[mode])
            each = [round(x) for x in rates[mode]]
            print(f"  {mode:12s} {median:8.0f}  {median / base:.2f}x  {each}")


if __name__ == "__main__":
    asyncio.run(main())
