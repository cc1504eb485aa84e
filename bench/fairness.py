"""Fair share under a 1:1:1:10 load: Jain's fairness index of tokens per tenant.

Four tenants queue work in the ratio 1:1:1:10 (arriving together, each at its own rate:
in each round of submissions the heavy tenant sends ten jobs, the others one); one
in-process runtime on SQLite (the real ``Worker`` and claim, the fake engine pacing its
tokens) runs it, with fairness on and off. While every
tenant still has work waiting, the tokens each tenant had processed are counted per
``--window`` seconds, and each window's Jain index ``(sum x)^2 / (n * sum x^2)`` taken
(1.0: equal shares; 1/n: one tenant has everything). Reported: the mean and the worst
window, per mode, and each tenant's share of the tokens::

    .venv/bin/python bench/fairness.py [--jobs 100] [--window 1] [--no-doc]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _common import machine, machine_line, table, update_doc
from inferq.api.dialects import DIALECTS
from inferq.blobs.memory import MemoryBlobs
from inferq.config import Settings
from inferq.core.work import ChatMessage, ChatRequest
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.runtime import open_runtime
from inferq.store.sqlite import SQLiteStore

MODEL = "fake"
LOAD = {"a": 1, "b": 1, "c": 1, "heavy": 10}
REQUEST = ChatRequest(messages=(ChatMessage("user", "one two three four five"),), max_tokens=8)


def jain(values: list[float]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


async def run(*, fair: bool, jobs: int, slots: int, token_delay: float, window: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="inferq-fair-"))
    options: dict[str, object] = {"token_delay": token_delay}
    spec = ModelSpec(name=MODEL, engine="fake", context_length=512, slots=slots, options=options)
    try:
        # the whole backlog first (no worker), arriving at each tenant's rate: in each
        # round, every tenant sends as many jobs as its load
        async with _runtime(tmp, spec, fair=fair, worker=False) as runtime:
            for _ in range(jobs):
                for tenant, load in LOAD.items():
                    for _ in range(load):
                        await runtime.jobs.submit(
                            tenant=tenant, model=MODEL, request=REQUEST, origin="bench"
                        )
        async with _runtime(tmp, spec, fair=fair, worker=True) as runtime:
            while await runtime.store.count_queued(tenant=None, limit=1):
                await asyncio.sleep(0.5)
        with sqlite3.connect(tmp / "inferq.db") as conn:
            done = conn.execute(
                "SELECT tenant, finished_at, prompt_tokens + completion_tokens FROM jobs "
                "WHERE state = 'succeeded'"
            ).fetchall()
        return _windows(done, window)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _runtime(tmp: Path, spec: ModelSpec, *, fair: bool, worker: bool) -> Any:
    return open_runtime(
        Settings(data_dir=tmp, fairness=fair, worker=worker),
        plugins=DIALECTS.plugins(),
        store=SQLiteStore(tmp / "inferq.db"),
        registry=ModelRegistry({MODEL: spec}),
        blobs=MemoryBlobs(),
    )


def _windows(done: list[tuple[str, float, int]], window: float) -> dict:
    """Jain's index per window while every tenant still had work (up to the first
    tenant's last finish), and each tenant's share of those tokens."""
    start = min(f for _, f, _ in done)
    end = min(max(f for t, f, _ in done if t == tenant) for tenant in LOAD)
    buckets: dict[int, dict[str, float]] = {}
    for tenant, finished, tokens in done:
        if finished < end:
            slot = buckets.setdefault(int((finished - start) // window), dict.fromkeys(LOAD, 0.0))
            slot[tenant] += tokens
    full = [b for i, b in sorted(buckets.items()) if (i + 1) * window <= end - start]
    indexes = [jain(list(b.values())) for b in full]
    totals = {t: sum(b[t] for b in full) for t in LOAD}
    everything = sum(totals.values()) or 1.0
    return {
        "windows": len(indexes),
        "mean": statistics.fmean(indexes) if indexes else float("nan"),
        "worst": min(indexes) if indexes else float("nan"),
        "shares": {t: totals[t] / everything for t in LOAD},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs of a tenant of load 1")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--token-delay", type=float, default=0.005)
    parser.add_argument("--window", type=float, default=0.5, help="seconds per window")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    rows = []
    for fair in (True, False):
        result = asyncio.run(
            run(
                fair=fair,
                jobs=args.jobs,
                slots=args.slots,
                token_delay=args.token_delay,
                window=args.window,
            )
        )
        shares = " / ".join(f"{result['shares'][t]:.2f}" for t in LOAD)
        rows.append(
            [
                "on" if fair else "off",
                result["windows"],
                f"{result['mean']:.3f}",
                f"{result['worst']:.3f}",
                shares,
            ]
        )
        print(rows[-1], flush=True)
    header = ["fairness", "windows", "Jain mean", "Jain worst", "shares a / b / c / heavy"]
    report = table(header, rows)
    print(report)
    if not args.no_doc:
        update_doc("fairness", f"{machine_line(machine())}\n\n{report}")


if __name__ == "__main__":
    main()
