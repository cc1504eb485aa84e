"""Overload, bounded: clients submitting without pause, far more than the server
completes, for a few seconds (bench/overload.py runs the same for a minute). Every
answer is a 200, or a 429/503 with Retry-After (no other 5xx); /healthz stays fast; the
server's memory stays bounded; every accepted job runs exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from tests.support.overload import LATER, models_file, overload, peak_rss_mb
from tests.support.server import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECONDS = 12
CLIENTS = 24
#: /healthz p99 bound in the suite. The target is 100 ms (bench/overload.py reports it);
#: the suite runs beside other work on a 2-core machine, whose scheduler alone delays
#: a process by more than that when the load average passes 10
HEALTHZ_P99_MS = 250


async def test_overload_answers_later_and_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "executions.log"
    env = {
        "INFERQ_MAX_QUEUED": "40",
        "INFERQ_MAX_QUEUED_PER_TENANT": "20",
        "INFERQ_MAX_INFLIGHT_REQUESTS": "8",
    }
    # about 6 jobs/s: a job is a few tokens 50 ms apart, on 2 slots
    models = models_file(tmp_path / "models.toml", log, slots=2, token_delay=0.05)
    server = Server(tmp_path / "data", models_file=models, env=env).start()
    try:
        keys = [server.create_key(f"load{i}") for i in range(3)]
        report = await overload(server.url, keys, seconds=SECONDS, clients=CLIENTS)
        assert server.proc is not None
        rss = peak_rss_mb(server.proc.pid)

        # every answer was a 200 or "later" with Retry-After, and many were "later"
        assert report.errors == []
        assert set(report.statuses) <= {200} | LATER, report.statuses
        assert report.without_retry_after == 0
        assert sum(report.statuses[s] for s in LATER) > report.statuses[200], report.statuses
        assert report.percentile(99) < HEALTHZ_P99_MS, sorted(report.healthz_ms)[-10:]
        assert rss < 400, rss

        # every accepted job runs, once
        db = server.data_dir / "inferq.db"

        def states() -> Counter[str]:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                return Counter(dict(rows.fetchall()))

        for _ in range(300):
            if states()["succeeded"] >= len(report.accepted):
                break
            await asyncio.sleep(0.1)
        assert states() == Counter({"succeeded": len(report.accepted)})
        ran = Counter(log.read_text().splitlines())
        assert ran == Counter(report.accepted.values())
        print(
            f"\n{report.sent} submits in {report.seconds:.1f}s ({report.sent / SECONDS:.0f}/s): "
            f"{dict(report.statuses)}; healthz p50 {report.percentile(50):.1f} ms, "
            f"p99 {report.percentile(99):.1f} ms; peak RSS {rss:.0f} MiB"
        )
    finally:
        server.stop()
