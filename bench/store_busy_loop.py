"""The SQLite store's writes beside a busy event loop, against an idle one.

In one process, as in ``inferq serve``: a real :class:`SQLiteStore` (its writer thread,
``synchronous = FULL``) on uvloop. Each side times one job's insert (the median of
``--inserts``), a batch's rows inserted in chunks of 1,000 (``--rows`` of them),
released to the queue and then cancelled, first with the loop idle and then with it
busy: four tasks that each run 0.3 ms of Python and yield, so the loop always has
Python to run, as it does when a server is saturated. The writer thread has to take
the GIL back after every statement it runs (and inside one, for each call a trigger
makes into Python); beside a busy loop each of those waits can last the interpreter's
switch interval (5 ms), so what matters is how many times the writer needs the GIL for
a change, not how long SQLite takes.

    .venv/bin/python bench/store_busy_loop.py [--rows 5000] [--inserts 40] [--no-doc]

Compare trees with ``bench/interleave.py`` (the figures vary by a factor from run to
run on a busy loop: the waits depend on where the loop is when the writer asks).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import uvloop

from _common import machine, machine_line, table, update_doc
from inferq.core.models import Job
from inferq.core.ports import Ending
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatMessage, ChatRequest
from inferq.store.sqlite import SQLiteStore

REQUEST = ChatRequest(
    messages=(ChatMessage(role="user", content="Summarize the plot of Hamlet in one line."),),
    max_tokens=32,
)
CHUNK = 1000


def job(**changes: object) -> Job:
    made = Job(
        id=str(uuid.uuid4()),
        tenant="t",
        model="fake",
        origin="bench",
        service_class=ServiceClass.ASYNC,
        priority=0,
        state=JobState.QUEUED,
        request=REQUEST,
        created_at=time.time(),
        info={},
        inputs={"messages": []},
        max_attempts=4,
    )
    return made.evolve(**changes) if changes else made


async def spin(stop: asyncio.Event) -> None:
    """Python work in 0.3 ms slices, yielding to the loop between them."""
    while not stop.is_set():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.0003:
            pass
        await asyncio.sleep(0)


async def side(path: Path, *, busy: bool, rows: int, inserts: int) -> dict[str, float]:
    store = SQLiteStore(path)
    await store.open()
    stop = asyncio.Event()
    spinners = [asyncio.ensure_future(spin(stop)) for _ in range(4 if busy else 0)]
    try:
        await asyncio.sleep(0.01)
        took = []
        for _ in range(inserts):
            t0 = time.perf_counter()
            await store.insert_job(job())
            took.append(time.perf_counter() - t0)
        batch = "batch_" + uuid.uuid4().hex
        made = [
            job(state=JobState.VALIDATING, service_class=ServiceClass.BATCH, batch_id=batch,
                custom_id=f"r{line}", batch_line=line)
            for line in range(1, rows + 1)
        ]  # fmt: skip
        t0 = time.perf_counter()
        for start in range(0, rows, CHUNK):
            await store.insert_rows(made[start : start + CHUNK])
        inserted = time.perf_counter() - t0
        t0 = time.perf_counter()
        await store.release_rows(tenant="t", batch_id=batch)
        released = time.perf_counter() - t0
        t0 = time.perf_counter()
        ending = Ending(JobState.CANCELLED)
        await store.finish_rows(ending, tenant="t", batch_id=batch, now=time.time())
        cancelled = time.perf_counter() - t0
    finally:
        stop.set()
        await asyncio.gather(*spinners)
        await store.close()
    return {
        "insert_ms": statistics.median(took) * 1e3,
        "rows_s": inserted,
        "release_s": released,
        "cancel_s": cancelled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5000, help="the batch's rows")
    parser.add_argument("--inserts", type=int, default=40, help="single inserts timed")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    info = machine()
    print(machine_line(info))
    results = {}
    with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp:
        for busy in (False, True):
            label = "busy loop" if busy else "idle loop"
            path = Path(tmp) / f"{label.split()[0]}.db"
            results[label] = uvloop.run(side(path, busy=busy, rows=args.rows, inserts=args.inserts))
            r = results[label]
            print(
                f"{label}: insert_job p50 {r['insert_ms']:.2f} ms; {args.rows} rows: "
                f"insert {r['rows_s']:.2f} s, release {r['release_s']:.2f} s, "
                f"cancel {r['cancel_s']:.2f} s",
                flush=True,
            )
    header = ["loop", "one job inserted (p50 ms)", f"{args.rows:,} rows inserted (s)",
              "released (s)", "cancelled (s)"]  # fmt: skip
    rows = [
        [label, f"{r['insert_ms']:.2f}", f"{r['rows_s']:.2f}", f"{r['release_s']:.2f}",
         f"{r['cancel_s']:.2f}"]
        for label, r in results.items()
    ]  # fmt: skip
    result = table(header, rows)
    print()
    print(result)
    if not args.no_doc:
        update_doc("store_busy_loop", "\n".join([machine_line(info), "", result]))


if __name__ == "__main__":
    main()
