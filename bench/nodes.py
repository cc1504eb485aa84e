"""Nodes: what pulling work over HTTP costs next to in-process workers.

One ``inferq serve`` (SQLite, its in-process worker on) with four models:
``noop-local`` (the fake engine, no token delay: no-op work in process),
``noop-remote`` (``engine = "remote"``, a handler model), and ``chat-local`` /
``chat-remote`` (the fake engine in process, and the same fake engine run by an
``inferq node --models`` process). Four ``inferq node`` processes run a no-op handler
(bench/node_handlers.py) with ``--capacity`` (32) each, and the in-process model has
as many slots, so both sides run as many jobs at once.

* **throughput**: ``--jobs`` queued jobs are inserted into the store in one
  transaction (so neither side waits on submissions), for one model at a time, and
  drained; jobs/s is their number over the span from the first claim to the last
  finish (the jobs' own timestamps). Rounds alternate local and remote.
* **latency**: sync ``POST /v1/chat/completions`` (one at a time, keep-alive),
  alternating ``chat-local`` and ``chat-remote``; the node's added p50 is the
  difference of the two medians.

    .venv/bin/python bench/nodes.py [--jobs 3000] [--rounds 3] [--requests 300] [--no-doc]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from _common import (
    NOISY,
    PYTHON,
    ROOT,
    Server,
    busy_cpu_seconds,
    cli,
    cpu_seconds,
    machine,
    machine_line,
    percentile,
    table,
    update_doc,
)
from inferq.core.models import Job
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import ChatMessage, ChatRequest, PayloadRequest, Request
from inferq.store.sqlite import SQLiteStore

MODELS = """\
[models.noop-local]
engine = "fake"
context_length = 512
slots = {slots}
token_delay = 0

[models.noop-remote]
engine = "remote"
handler = true

[models.chat-local]
engine = "fake"
context_length = 512
slots = 1
token_delay = 0

[models.chat-remote]
engine = "remote"
context_length = 512
"""
NODE_MODELS = """\
[models.chat-remote]
engine = "fake"
context_length = 512
slots = 1
token_delay = 0
"""
NODES = 4
CORES = len(os.sched_getaffinity(0))


def node(server: Server, token: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env.update(INFERQ_NODE_TOKEN=token, PYTHONUNBUFFERED="1")
    with log.open("ab") as out:
        return subprocess.Popen(
            [PYTHON, "-m", "inferq", "node", "--server", server.url, "--log-level", "warning",
             *args],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT / "bench",
        )  # fmt: skip


def jobs_of(model: str, request: Request, count: int) -> list[Job]:
    now = time.time()
    return [
        Job(
            id=str(uuid.uuid4()),
            tenant="bench",
            model=model,
            origin="together",
            service_class=ServiceClass.ASYNC,
            priority=0,
            state=JobState.QUEUED,
            request=request,
            created_at=now,
        )
        for _ in range(count)
    ]


async def drain(
    store: SQLiteStore, model: str, request: Request, count: int, pids: list[int]
) -> tuple[float, float, float]:
    """Insert ``count`` jobs of ``model`` at once, wait until they all succeeded; jobs/s,
    and the CPU milliseconds per job that the processes ``pids`` used meanwhile: all of
    them, and the first (the server) alone."""
    jobs = jobs_of(model, request, count)
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    server_before = cpu_seconds(pids[0])
    ids = {job.id for job in jobs}
    await store.insert_rows(jobs)
    deadline = time.monotonic() + 600
    while True:
        await asyncio.sleep(0.2)
        counts = await store.metrics(tenant="bench", model=model)
        if counts.running == 0 and counts.waiting == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{model}: the jobs did not all end in time")
    rows = await store.db.fetch_all(
        "list_jobs", {"tenant": "bench", "model": model, "states": None, "limit": 10 * count}
    )
    cpu_ms = (sum(cpu_seconds(pid) for pid in pids) - cpu_before) * 1000 / count
    server_ms = (cpu_seconds(pids[0]) - server_before) * 1000 / count
    mine = [r for r in rows if r["id"] in ids]
    assert len(mine) == count and all(r["state"] == "succeeded" for r in mine)
    first = min(r["claimed_at"] for r in mine)
    return count / (max(r["finished_at"] for r in mine) - first), cpu_ms, server_ms


def latencies(server: Server, key: str, requests: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"chat-local": [], "chat-remote": []}
    body = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {key}"}) as http:
        for i in range(requests + 20):
            for model in found:
                start = time.perf_counter()
                answer = http.post("/v1/chat/completions", json={**body, "model": model})
                took = time.perf_counter() - start
                answer.raise_for_status()
                if i >= 20:  # warm-up
                    found[model].append(took * 1000)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--capacity", type=int, default=32, help="jobs per node at once (in process: 4x this)"
    )
    parser.add_argument("--section", default="nodes", help="its section of docs/benchmarks.md")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    info = machine()
    root = Path(tempfile.mkdtemp(prefix="inferq-bench-nodes-"))
    models = root / "models.toml"
    models.write_text(MODELS.format(slots=NODES * args.capacity))
    (root / "node-models.toml").write_text(NODE_MODELS)
    server = Server(root / "data", models_file=models, log_level="warning").start()
    procs: list[subprocess.Popen[bytes]] = []
    busy_before, started, own_before = busy_cpu_seconds(), time.monotonic(), time.process_time()
    try:
        key = server.create_key("bench")
        for i in range(NODES):
            token = cli("nodes", "create", "--name", f"noop{i}", "--data-dir",
                        str(server.data_dir)).strip().splitlines()[-1]  # fmt: skip
            procs.append(node(server, token, root / f"node{i}.log", "--handler",
                              "node_handlers:NoOp", "--model", "noop-remote",
                              "--capacity", str(args.capacity)))  # fmt: skip
        token = cli("nodes", "create", "--name", "chat", "--data-dir", str(server.data_dir))
        procs.append(node(server, token.strip().splitlines()[-1], root / "chat.log",
                          "--models", str(root / "node-models.toml")))  # fmt: skip
        time.sleep(3)  # the nodes say hello
        pids = [server.pid, *(proc.pid for proc in procs)]
        throughput = asyncio.run(measure(server, args.jobs, args.rounds, pids))
        lat = latencies(server, key, args.requests)
        ours = sum(cpu_seconds(p) for p in [server.pid, *(proc.pid for proc in procs)])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        server.stop()
    ours += time.process_time() - own_before
    others = (busy_cpu_seconds() - busy_before - ours) / (time.monotonic() - started)
    report(info, args, throughput, lat, others)


async def measure(
    server: Server, count: int, rounds: int, pids: list[int]
) -> dict[str, list[float]]:
    store = SQLiteStore(server.data_dir / "inferq.db")
    await store.open()
    chat = ChatRequest(messages=(ChatMessage("user", "x"),), max_tokens=1)
    keys = ("in-process", "nodes", "cpu-in", "cpu-nodes", "server-in", "server-nodes")
    found: dict[str, list[float]] = {key: [] for key in keys}
    try:
        for r in range(rounds):
            local = await drain(store, "noop-local", chat, count, pids)
            remote = await drain(store, "noop-remote", PayloadRequest({}), count, pids)
            values = (local[0], remote[0], local[1], remote[1], local[2], remote[2])
            for key, value in zip(keys, values, strict=True):
                found[key].append(value)
            print(
                f"round {r + 1}: in-process {local[0]:.0f} jobs/s, {NODES} nodes "
                f"{remote[0]:.0f} jobs/s; server CPU ms/job {local[2]:.3f} / {remote[2]:.3f}, "
                f"all {local[1]:.3f} / {remote[1]:.3f}"
            )
    finally:
        await store.close()
    return found


def report(
    info: dict[str, str],
    args: argparse.Namespace,
    throughput: dict[str, list[float]],
    lat: dict[str, list[float]],
    busy: float,
) -> None:
    local, remote = (statistics.median(throughput[k]) for k in ("in-process", "nodes"))
    #: each round's nodes / in-process, the two measured back to back
    ratio = statistics.median(
        n / i for i, n in zip(throughput["in-process"], throughput["nodes"], strict=True)
    )
    per_round = ", ".join(
        f"{i:.0f} / {n:.0f}"
        for i, n in zip(throughput["in-process"], throughput["nodes"], strict=True)
    )
    cpu_in, cpu_nodes, server_in, server_nodes = (
        statistics.median(throughput[k])
        for k in ("cpu-in", "cpu-nodes", "server-in", "server-nodes")
    )
    rows = [
        [f"in-process worker ({NODES * args.capacity} slots)", f"{local:.0f}", "1.00",
         f"{cpu_in:.3f}", f"{server_in:.3f}", f"{1000 * CORES / cpu_in:.0f}"],
        [f"{NODES} node processes (capacity {args.capacity} each)", f"{remote:.0f}",
         f"{remote / local:.2f}", f"{cpu_nodes:.3f}", f"{server_nodes:.3f}",
         f"{1000 * CORES / cpu_nodes:.0f}"],
    ]  # fmt: skip
    headers = ["side", "jobs/s", "ratio", "CPU ms/job", "server CPU ms/job", "jobs/s if CPU-bound"]
    p50 = {m: percentile(v, 50) for m, v in lat.items()}
    p90 = {m: percentile(v, 90) for m, v in lat.items()}
    lat_rows = [[m, f"{p50[m]:.2f}", f"{p90[m]:.2f}"] for m in ("chat-local", "chat-remote")]
    added = p50["chat-remote"] - p50["chat-local"]
    body = "\n\n".join(
        [
            f"### {args.section}",
            machine_line(info)
            + f" Other processes used {busy:.2f} cores on average during the run"
            + (
                ": not a quiet machine (other work ran beside it), so compare the rows "
                "within the run, not with other runs."
                if busy > NOISY
                else "."
            ),
            f"No-op jobs, {args.jobs} per round, median of {args.rounds} rounds (jobs/s, "
            "first claim to last finish):",
            table(headers, rows),
            "CPU ms/job: the CPU time the server and the node processes used per job (all of "
            f"them, on both sides), which other work on the machine disturbs far less than "
            f"the wall time; the last column is what {CORES} cores give at that cost. Server "
            "CPU ms/job: the server process's alone (its event loop, SQLite's writer and "
            "readers), which does not depend on how many cores the machine has.",
            f"Rounds (in-process / nodes): {per_round}. Median of the rounds' ratios: "
            f"**{ratio:.2f}x**; by CPU cost, nodes reach **{cpu_in / cpu_nodes:.2f}x** of "
            f"in-process; target at least 0.5x. A job run by a node costs the server "
            f"**{server_nodes / server_in:.2f}x** the CPU of one run in process.",
            f"Sync chat through the fake engine, {args.requests} requests each, alternating (ms):",
            table(["model", "p50", "p90"], lat_rows),
            f"Added p50 by a node: **{added:.2f} ms** (target < 5 ms: "
            f"{'met' if added < 5 else 'not met'}).",
        ]
    )
    print(body)
    if not args.no_doc:
        update_doc(args.section, body)


if __name__ == "__main__":
    sys.exit(main())
