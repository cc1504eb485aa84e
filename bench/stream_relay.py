"""Streams across processes: what relaying the generated text costs a streamed answer.

A streamed chat answered by the process whose worker generates it takes its text from
that worker directly. Under ``inferq serve --workers N`` the worker is a process of its
own, so every piece reaches the API process that streams it through the store's text
relay: SQLite's bus (Unix datagrams) or PostgreSQL's LISTEN/NOTIFY (one statement at
most every 20 ms per process, pieces coalesced). This benchmark sends the same streamed
chats to one ``inferq serve`` process (worker in process) and to ``inferq serve
--workers 2`` (two API processes and the worker's), on SQLite and on PostgreSQL, with
configurations rotating round by round, one request at a time over a keep-alive
connection. The fake engine paces its words (``token_delay``), so an answer streams for
a while, as a model's would. Reported per configuration (median round): the time to the
first piece of text and to ``[DONE]`` (p50 and p90), how many content chunks a stream
carried (fewer than the words: pieces that travelled together), and the server's CPU
per stream (every process of it).

    .venv/bin/python bench/stream_relay.py [--rounds 3] [--requests 40] [--no-wait]
        [--no-doc]
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from _common import (
    NOISY,
    Server,
    busy_cpu_seconds,
    machine,
    machine_line,
    percentile,
    postgres_schema,
    table,
    update_doc,
    wait_until_quiet,
)
from serve_workers import DEFAULT_URL, process_tree, tree_cpu

TOKEN_DELAY = 0.01
WORDS = 32
MODELS = (
    '[models.fake]\nengine = "fake"\ncontext_length = 512\nslots = 2\n'
    f"token_delay = {TOKEN_DELAY}\n"
)
CHAT = {
    "model": "fake",
    "messages": [{"role": "user", "content": " ".join(["word"] * WORDS)}],
    "max_tokens": WORDS,
}
BODY = json.dumps({**CHAT, "stream": True}).encode()
PLAIN = json.dumps(CHAT).encode()
#: (store, API processes): 1 is ``serve`` with its worker in process, 2 ``--workers 2``
CONFIGS = (("sqlite", 1), ("sqlite", 2), ("postgres", 1), ("postgres", 2))


def stream_once(conn: http.client.HTTPConnection, headers: dict[str, str]) -> dict[str, float]:
    """One streamed chat read to its end: seconds to the first text and to the end, and
    the content chunks it carried."""
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", BODY, headers)
    response = conn.getresponse()
    first: float | None = None
    chunks = 0
    while line := response.readline():
        if not line.startswith(b"data: {"):
            continue
        delta = json.loads(line[6:])["choices"][0]["delta"]
        if delta.get("content"):
            chunks += 1
            if first is None:
                first = time.perf_counter() - t0
    end = time.perf_counter() - t0
    if response.status != 200 or first is None:
        raise RuntimeError(f"stream: HTTP {response.status}, text {first is not None}")
    return {"first": first, "end": end, "chunks": chunks}


def plain_once(conn: http.client.HTTPConnection, headers: dict[str, str]) -> float:
    """The same chat not streamed: seconds to its answer."""
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", PLAIN, headers)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"sync: HTTP {response.status}")
    return time.perf_counter() - t0


def measure(work: Path, store: str, processes: int, args: argparse.Namespace) -> dict[str, Any]:
    options = ["--workers", str(processes)] if processes > 1 else []
    schema = postgres_schema(args.database_url) if store == "postgres" else nullcontext("")
    with schema as url:
        env = {"INFERQ_DATABASE_URL": url} if url else {}
        data = work / f"data-{store}-{processes}-{time.monotonic_ns()}"
        with Server(data, models_file=work / "models.toml", env=env, args=options) as server:
            key = server.create_key("bench")
            headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            for _ in range(args.warmup):
                stream_once(conn, headers)
            pids = process_tree(server.pid)
            cpu0, busy0, t0 = tree_cpu(pids), busy_cpu_seconds(), time.monotonic()
            own0 = resource.getrusage(resource.RUSAGE_SELF)
            runs, plain = [], []
            for _ in range(args.requests):
                runs.append(stream_once(conn, headers))
                plain.append(plain_once(conn, headers) * 1e3)
            wall = time.monotonic() - t0
            cpu1 = tree_cpu(pids)
            own1 = resource.getrusage(resource.RUSAGE_SELF)
            conn.close()
    server_cpu = sum(cpu1[p] - cpu0[p] for p in pids)
    client_cpu = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
    return {
        "first": [r["first"] * 1e3 for r in runs],
        "end": [r["end"] * 1e3 for r in runs],
        "plain": plain,
        "chunks": statistics.median(r["chunks"] for r in runs),
        "cpu_ms": server_cpu / (2 * len(runs)) * 1e3,
        "other": max(0.0, (busy_cpu_seconds() - busy0 - server_cpu - client_cpu) / wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40, help="measured streams a round")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured streams a round")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    info = machine()
    print(machine_line(info))
    rounds: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp:
        work = Path(tmp)
        (work / "models.toml").write_text(MODELS)
        for r in range(args.rounds):
            for store, processes in CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]:
                if not args.no_wait:
                    wait_until_quiet()
                res = measure(work, store, processes, args)
                rounds[(store, processes)].append(res)
                print(
                    f"  round {r + 1} {store:8s} {processes} process(es): first text p50 "
                    f"{percentile(res['first'], 50):6.1f} ms, end p50 "
                    f"{percentile(res['end'], 50):6.1f} ms, chunks {res['chunks']:.0f}, "
                    f"not streamed p50 {percentile(res['plain'], 50):6.1f} ms, "
                    f"server CPU {res['cpu_ms']:.1f} ms/request, other CPU {res['other']:.2f}",
                    flush=True,
                )
    rows = []
    noisy = 0.0
    for store, processes in CONFIGS:
        runs = sorted(rounds[(store, processes)], key=lambda x: percentile(x["end"], 50))
        res = runs[(len(runs) - 1) // 2]
        noisy = max(noisy, res["other"])
        rows.append(
            [
                "SQLite" if store == "sqlite" else "PostgreSQL",
                "1 (worker in process)" if processes == 1 else f"{processes} + the worker's",
                f"{percentile(res['first'], 50):.1f}",
                f"{percentile(res['first'], 90):.1f}",
                f"{percentile(res['end'], 50):.1f}",
                f"{percentile(res['end'], 90):.1f}",
                f"{res['chunks']:.0f}",
                f"{percentile(res['plain'], 50):.1f}",
                f"{res['cpu_ms']:.1f}",
            ]
        )
    result = table(
        [
            "store",
            "API processes",
            "first text p50 ms",
            "p90",
            "[DONE] p50 ms",
            "p90",
            "content chunks (median)",
            "not streamed: answer p50 ms",
            "server CPU ms/request",
        ],
        rows,
    )
    print()
    print(result)
    if args.no_doc:
        return
    if noisy > NOISY:
        print(f"not updating the docs: other processes used {noisy:.2f} cores")
        return
    update_doc(
        "stream_relay",
        "\n".join(
            [
                machine_line(info),
                "",
                f"{args.rounds} rounds of {args.requests} streamed chats (after {args.warmup} "
                "warm-up) per configuration, each followed by the same chat not streamed, one "
                "at a time, configurations rotating; fake engine, "
                f"{WORDS} words {TOKEN_DELAY * 1e3:.0f} ms apart, 2 slots; log level info; "
                "the median round by p50 to [DONE].",
                "",
                result,
            ]
        ),
    )


if __name__ == "__main__":
    main()
