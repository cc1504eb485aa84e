"""The queue's own cost per job, in one process: submit N no-op jobs, run them, time it.

A SQLite store in a fresh directory, the fake engine (no delay) and one worker, all in
this process: no HTTP, no other process, so what is measured is the job service, the
store and the worker. Timed runs move with the machine; for changes of a few percent run
it under callgrind twice and subtract, so that start-up and imports cancel out::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/q300.out \\
        .venv/bin/python bench/queue_inprocess.py --jobs 300 --fair
    valgrind --tool=callgrind --callgrind-out-file=/tmp/q1500.out \\
        .venv/bin/python bench/queue_inprocess.py --jobs 1500 --fair
    # instructions a job: (summary of q1500 - summary of q300) / 1200

    .venv/bin/python bench/queue_inprocess.py [--jobs 3000] [--slots 3] [--fair]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from inferq.core.events import JobEvents
from inferq.core.service import JobService
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatMessage, ChatRequest
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.runner.worker import Worker, WorkerSettings
from inferq.store.sqlite import SQLiteStore


async def run(jobs: int, slots: int, fair: bool) -> tuple[float, float]:
    """Seconds of wall and of this process's CPU from the worker's start to the last job's
    end (the submits come before, untimed)."""
    with tempfile.TemporaryDirectory() as work:
        store = SQLiteStore(Path(work) / "jobs.db")
        await store.open()
        spec = ModelSpec(name="fake", engine="fake", context_length=64, slots=slots)
        registry = ModelRegistry({"fake": spec})
        await registry.start()
        events = JobEvents()
        service = JobService(store=store, models=registry, events=events)
        request = ChatRequest(messages=(ChatMessage("user", "hi there"),), max_tokens=4)
        ids = [
            (
                await service.submit(
                    tenant="t", model="fake", request=request, origin="bench",
                    service_class=ServiceClass.ASYNC,
                )
            ).id
            for _ in range(jobs)
        ]  # fmt: skip
        settings = WorkerSettings(lease_seconds=30, poll_interval=0.5, tick=0.5, fair=fair)
        worker = Worker(store=store, registry=registry, events=events, settings=settings)
        wall, cpu = time.perf_counter(), time.process_time()
        await worker.start()
        while True:
            last = await store.get_job(ids[-1], tenant="t")
            if last is not None and last.state is JobState.SUCCEEDED:
                break
            await asyncio.sleep(0.02)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        await worker.stop()
        await registry.close()
        await store.close()
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument(
        "--fair", action="store_true", help="claim in fair order (the default of serve)"
    )
    args = parser.parse_args()
    wall, cpu = asyncio.run(run(args.jobs, args.slots, args.fair))
    print(
        f"{args.jobs} jobs, {args.slots} slots, fair={args.fair}: {wall:.2f} s, "
        f"{wall / args.jobs * 1e6:.0f} µs a job, CPU {cpu / args.jobs * 1e6:.0f} µs a job"
    )


if __name__ == "__main__":
    main()
