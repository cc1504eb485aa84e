"""Overload for a minute: clients submitting without pause to one ``inferq serve``
(SQLite, the fake engine at about 6 jobs/s), far more than it completes, with the queue
and in-flight bounds set; a probe times ``/healthz`` every 50 ms. Reported: the answers
by status (every one a 200, or a 429/503 with Retry-After), /healthz p50/p99, the
server's peak RSS, and whether every accepted job ran exactly once. The suite runs the
same for 12 s (tests/acceptance/test_overload.py)::

    .venv/bin/python bench/overload.py [--seconds 60] [--clients 24]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.overload import LATER, models_file, overload, peak_rss_mb  # noqa: E402
from tests.support.server import Server  # noqa: E402

ENV = {
    "INFERQ_MAX_QUEUED": "40",
    "INFERQ_MAX_QUEUED_PER_TENANT": "20",
    "INFERQ_MAX_INFLIGHT_REQUESTS": "8",
}


async def main(seconds: float, clients: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="inferq-overload-"))
    log = root / "executions.log"
    models = models_file(root / "models.toml", log, slots=2, token_delay=0.05)
    server = Server(root / "data", models_file=models, env=ENV).start()
    try:
        keys = [server.create_key(f"load{i}") for i in range(3)]
        report = await overload(server.url, keys, seconds=seconds, clients=clients)
        assert server.proc is not None
        rss = peak_rss_mb(server.proc.pid)
        db = server.data_dir / "inferq.db"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                states = Counter(
                    dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
                )
            if states["succeeded"] >= len(report.accepted):
                break
            await asyncio.sleep(0.5)
        ran = Counter(log.read_text().splitlines())
        once = ran == Counter(report.accepted.values())
        other = {s: n for s, n in report.statuses.items() if s != 200 and s not in LATER}
        print(
            f"{report.sent} submits in {report.seconds:.0f} s "
            f"({report.sent / report.seconds:.0f}/s)"
        )
        print(f"answers: {dict(sorted(report.statuses.items()))}; other: {other or 'none'}")
        print(
            f"429/503 without Retry-After: {report.without_retry_after}; "
            f"transport errors: {len(report.errors)}"
        )
        print(
            f"accepted {len(report.accepted)} ({len(report.accepted) / report.seconds:.1f}/s, "
            f"what the server completes); all run exactly once: {once}; jobs: {dict(states)}"
        )
        print(
            f"/healthz: {len(report.healthz_ms)} probes, p50 {report.percentile(50):.1f} ms, "
            f"p99 {report.percentile(99):.1f} ms, max {max(report.healthz_ms):.1f} ms"
        )
        print(f"server peak RSS {rss:.0f} MiB")
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=24)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.clients))
