"""A lean HTTP/1.1 load generator, run as its own process by the benchmarks.

Keeps ``--concurrency`` keep-alive connections, each sending one request and
reading its whole response before the next (no pipelining). Raw asyncio streams
on uvloop cost the client far less CPU than an HTTP library would, which matters
when client and server share a 2-core machine. Prints one JSON object: requests
completed in the measured window, status counts, latency percentiles (ms) and
the client's own CPU time.

    python bench/_loadgen.py --port 8000 --path /healthz --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections import Counter
from pathlib import Path

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


def build_request(method: str, path: str, host: str, headers: list[str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}", *headers]
    if body or method == "POST":
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def connection(
    host: str,
    port: int,
    request: bytes,
    start_at: float,
    stop_at: float,
    latencies: list[float],
    statuses: Counter[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                    break
            if length:
                await reader.readexactly(length)
            t1 = time.perf_counter()
            if t0 >= start_at and t1 <= stop_at:
                latencies.append(t1 - t0)
                statuses[status] += 1
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> dict[str, object]:
    headers = [f"authorization: Bearer {args.key}"] if args.key else []
    body = Path(args.body).read_bytes() if args.body else b""
    request = build_request(args.method, args.path, f"{args.host}:{args.port}", headers, body)
    now = time.perf_counter()
    start_at, stop_at = now + args.warmup, now + args.warmup + args.duration
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    tasks = [
        connection(args.host, args.port, request, start_at, stop_at, latencies, statuses)
        for _ in range(args.concurrency)
    ]
    await asyncio.gather(*tasks)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))] * 1e3, 2)

    return {
        "requests": len(latencies),
        "seconds": args.duration,
        "rps": len(latencies) / args.duration,
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        # CPU over warm-up and measurement, as a share of wall time
        "client_cpu": (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime)
        / (args.warmup + args.duration),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--path", default="/healthz")
    parser.add_argument("--body", help="file with the request body")
    parser.add_argument("--key", help="API key (Bearer)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    ns = parser.parse_args()
    run = uvloop.run if uvloop is not None else asyncio.run
    print(json.dumps(run(main(ns))))
