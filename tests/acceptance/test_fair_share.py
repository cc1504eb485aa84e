"""Many tenants on one queue: fair share across real processes (core/fairness.py).

One API process and two ``inferq worker`` processes on one store (a SQLite file, or a
PostgreSQL schema), the fake engine pacing each token:

1. One tenant submits 400 jobs, then another submits 10 (all before the workers start, so
   the backlog is whole): the second tenant's jobs all finish while most of the first's
   are still waiting.
2. With a tenant of weight 3 whose jobs are large and a tenant of weight 1 whose jobs are
   small also backlogged: while all are, the first processes three times the second's
   tokens (within 15%), and so runs far fewer jobs (the share is in tokens, not
   requests); the big tenant, of weight 1, as many tokens as the small-job tenant.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.cluster import MODEL, Api, Cluster, connect, fresh_schema

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: how the jobs are sized: the fake engine's tokens are words (prompt and echoed answer)
SMALL = "a b c"  # 3 prompt + 4 output tokens
LARGE = " ".join(f"w{i}" for i in range(30))  # 30 prompt + 31 output tokens

#: how long the shares are measured for (seconds)
WINDOW = 10

COUNTS = """
SELECT tenant,
       SUM(CASE WHEN state = 'succeeded' THEN prompt_tokens + completion_tokens ELSE 0 END)
           AS tokens,
       SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END) AS done,
       SUM(CASE WHEN state IN ('queued', 'running') THEN 1 ELSE 0 END) AS waiting
FROM jobs GROUP BY tenant
"""


@dataclass(frozen=True)
class Progress:
    tokens: int = 0
    done: int = 0
    waiting: int = 0


@pytest.fixture(params=["sqlite", "postgres"])
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with fresh_schema() as schema:
        the_cluster = Cluster(tmp_path, schema, lease_seconds=10, token_delay=0.02, slots=2)
        if request.param == "sqlite":
            the_cluster.env["INFERQ_DATABASE_URL"] = f"sqlite:///{tmp_path / 'jobs.db'}"
        try:
            yield the_cluster
        finally:
            the_cluster.close()


async def progress(cluster: Cluster) -> dict[str, Progress]:
    """Each tenant's tokens processed, jobs done and jobs still waiting or running."""
    url = cluster.env["INFERQ_DATABASE_URL"]
    rows: list[Any]
    if url.startswith("sqlite:///"):

        def read() -> list[Any]:
            with sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True) as db:
                return db.execute(COUNTS).fetchall()

        rows = await asyncio.to_thread(read)
    else:
        conn = await connect(cluster.schema)
        try:
            rows = [tuple(r) for r in await conn.fetch(COUNTS)]
        finally:
            await conn.close()
    return {tenant: Progress(int(t), int(d), int(w)) for tenant, t, d, w in rows}


async def submit(api: Api, key: str, text: str, n: int) -> None:
    """``n`` Together queue jobs of ``text``, 24 in flight."""
    payload = {"messages": [{"role": "user", "content": text}], "max_tokens": 64}
    body = {"model": MODEL, "payload": payload}
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as client:
        todo = iter(range(n))

        async def one_by_one() -> None:
            for _ in todo:
                response = await client.post("/v1/queue/submit", json=body)
                assert response.status_code == 200, response.text

        await asyncio.gather(*(one_by_one() for _ in range(24)))


async def test_tenants_share_the_engines_by_weight_in_tokens(cluster: Cluster) -> None:
    keys = {"big": cluster.create_key("big")}  # (migrates the store first)
    for name in ("small", "heavy", "light"):
        keys[name] = cluster.cli("keys", "create", "--name", name).strip().splitlines()[-1]
    cluster.cli("tenants", "weight", "heavy", "3")
    api = cluster.spawn_api()
    await cluster.wait_ready([api])
    # the backlogs are whole before any worker starts
    await submit(api, keys["big"], SMALL, 400)
    await submit(api, keys["small"], SMALL, 10)
    await asyncio.gather(
        submit(api, keys["heavy"], LARGE, 100), submit(api, keys["light"], SMALL, 300)
    )
    await cluster.wait_ready([cluster.spawn_worker(), cluster.spawn_worker()])

    # 1. the small tenant is not stuck behind the big one's backlog
    async def small_done() -> dict[str, Progress] | None:
        now = await progress(cluster)
        return now if now["small"].done == 10 else None

    at_small_done = await cluster.wait_for("the small tenant's 10 jobs", small_done, timeout=30)
    assert at_small_done["big"].waiting > 200, at_small_done

    # 2. weights in tokens, while every tenant is backlogged
    await asyncio.sleep(2)
    before = await progress(cluster)
    await asyncio.sleep(WINDOW)
    after = await progress(cluster)
    for tenant in ("big", "heavy", "light"):
        assert after[tenant].waiting > 0, f"{tenant} ran out of work: {after}"
    heavy = after["heavy"].tokens - before["heavy"].tokens
    light = after["light"].tokens - before["light"].tokens
    big = after["big"].tokens - before["big"].tokens
    assert heavy / light == pytest.approx(3, rel=0.15), (before, after)
    assert big / light == pytest.approx(1, rel=0.15), (before, after)
    # in requests, the heavy tenant ran far fewer jobs than the light one
    assert after["heavy"].done - before["heavy"].done < after["light"].done - before["light"].done
