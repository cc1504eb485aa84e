"""Queue submit throughput: ``POST /v1/queue/submit`` requests per second.

One ``inferq serve`` process (SQLite store in a fresh data directory, the fake
engine, its worker draining the queue as a real one would) and a separate load
generator process (``bench/_loadgen.py``: keep-alive connections, one request in
flight per connection). Each round measures ``GET /healthz`` (no key, no store:
the HTTP stack's ceiling on this machine) and then submit, so drift hits both;
the result is the median round. Every submit is committed (fsync'd) before its
200, as always.

The server runs at log level ``info`` (the default: one access line and one
"queued" line per submit) and again at ``warning``.

    .venv/bin/python bench/queue_submit.py [--concurrency 64] [--duration 8] [--rounds 2]
        [--level info] [--no-wait] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import (
    NOISY,
    PYTHON,
    Server,
    busy_cpu_seconds,
    cpu_seconds,
    machine,
    machine_line,
    table,
    update_doc,
    wait_until_quiet,
)

HERE = Path(__file__).resolve().parent
MODELS = '[models.fake]\nengine = "fake"\ncontext_length = 512\nslots = 1\n'
PAYLOAD = {
    "model": "fake",
    "payload": {
        "messages": [{"role": "user", "content": "Summarize the plot of Hamlet in one line."}],
        "max_tokens": 32,
    },
}


def load(server: Server, args: argparse.Namespace, *, path: str, **extra: str) -> dict[str, Any]:
    cmd = [
        PYTHON, str(HERE / "_loadgen.py"), "--port", str(server.port), "--path", path,
        "--concurrency", str(args.concurrency), "--duration", str(args.duration),
        "--warmup", str(args.warmup),
    ]  # fmt: skip
    for name, value in extra.items():
        cmd += [f"--{name}", value]
    cpu0, busy0, t0 = cpu_seconds(server.pid), busy_cpu_seconds(), time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.monotonic() - t0
    result: dict[str, Any] = json.loads(done.stdout)
    result["server_cpu"] = (cpu_seconds(server.pid) - cpu0) / wall
    # Everything else that ran meanwhile: other processes would skew the result.
    result["other_cpu"] = max(
        0.0, (busy_cpu_seconds() - busy0) / wall - result["server_cpu"] - result["client_cpu"]
    )
    return result


def drain(server: Server, key: str, timeout: float = 300.0) -> tuple[int, float]:
    """Wait until the worker has run every queued job: (jobs it ran, seconds)."""
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{server.url}/v1/queue/metrics"
    t0 = time.monotonic()
    first: int | None = None
    while time.monotonic() - t0 < timeout:
        counts = httpx.get(url, params={"model": "fake"}, headers=headers, timeout=10).json()
        left = counts["messages_waiting"] + counts["messages_running"]
        if first is None:
            first = left
        if left == 0:
            return first, time.monotonic() - t0
        time.sleep(0.2)
    sys.exit(f"the queue did not drain within {timeout:g} s")


def run_config(
    workdir: Path, log_level: str, args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    models = workdir / "models.toml"
    models.write_text(MODELS)
    body = workdir / "body.json"
    body.write_text(json.dumps(PAYLOAD))
    data = workdir / f"data-{log_level}"
    runs: dict[str, list[dict[str, Any]]] = {"healthz": [], "submit": []}
    if not args.no_wait:
        wait_until_quiet()
    with Server(data, models_file=models, log_level=log_level) as server:
        key = server.create_key("bench")
        for r in range(args.rounds):
            for name in ("healthz", "submit"):
                if name == "healthz":
                    res = load(server, args, path="/healthz")
                else:
                    res = load(
                        server, args, path="/v1/queue/submit", method="POST",
                        body=str(body), key=key,
                    )  # fmt: skip
                    # The worker keeps running the backlog; let it finish before the
                    # next measurement, and note how fast it went.
                    jobs, seconds = drain(server, key)
                    res["drain_jobs"], res["drain_s"] = jobs, seconds
                runs[name].append(res)
                print(
                    f"  [{log_level}] round {r + 1} {name:8s} {res['rps']:8.0f} req/s  "
                    f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  "
                    f"server CPU {res['server_cpu']:.2f}  client CPU {res['client_cpu']:.2f}  "
                    f"other CPU {res['other_cpu']:.2f}  "
                    f"{res['statuses']}",
                    flush=True,
                )
                if name == "submit":
                    print(
                        f"  [{log_level}] round {r + 1} drain    {res['drain_jobs']} queued jobs "
                        f"run in {res['drain_s']:.1f} s",
                        flush=True,
                    )
    # Every acknowledged submit is in the database.
    acked = sum(int(r["statuses"].get("200", 0)) for r in runs["submit"])
    conn = sqlite3.connect(data / "inferq.db")
    try:
        stored, succeeded = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(state = 'succeeded'), 0) FROM jobs"
        ).fetchone()
    finally:
        conn.close()
    if stored < acked or succeeded != stored:
        sys.exit(f"{acked} submits acknowledged, {stored} jobs stored, {succeeded} succeeded")
    return runs


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["rps"])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--level",
        action="append",
        choices=("info", "warning"),
        help="the server's log level (repeat for both; default: info, then warning)",
    )
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument(
        "--force-doc", action="store_true", help="update the docs even from a noisy run"
    )
    args = parser.parse_args()
    info = machine()
    print(machine_line(info))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp:
        for level in args.level or ("info", "warning"):
            results[level] = run_config(Path(tmp), level, args)

    rows = []
    for level, runs in results.items():
        base = median_run(runs["healthz"])
        sub = median_run(runs["submit"])
        for name, res in (("GET /healthz (baseline)", base), ("POST /v1/queue/submit", sub)):
            ratio = f"{res['rps'] / base['rps']:.2f}" if res is sub else "1.00"
            rows.append([
                level, name, f"{res['rps']:,.0f}", ratio, f"{res['p50_ms']:.1f}",
                f"{res['p99_ms']:.1f}", f"{res['server_cpu']:.2f}", f"{res['client_cpu']:.2f}",
                f"{res['other_cpu']:.2f}",
            ])  # fmt: skip
    header = [
        "server log level", "endpoint", "req/s", "vs healthz", "p50 ms", "p99 ms",
        "server CPU (cores)", "client CPU (cores)", "other CPU (cores)",
    ]  # fmt: skip
    result_table = table(header, rows)
    spread = {
        level: ", ".join(f"{r['rps']:,.0f}" for r in runs["submit"])
        for level, runs in results.items()
    }
    print()
    print(result_table)
    level = "info" if "info" in results else next(iter(results))
    submit_info = median_run(results[level]["submit"])["rps"]
    verdict = "meets" if submit_info >= 1000 else "MISSES"
    summary = (
        f"Submit at log level {level}: {submit_info:,.0f} req/s ({verdict} the 1,000 target)."
        if level != "info"
        else f"Submit at the default log level: {submit_info:,.0f} req/s "
        f"({verdict} the 1,000 target)."
    )
    drains = sorted(
        r["drain_jobs"] / r["drain_s"]
        for runs in results.values()
        for r in runs["submit"]
        if r["drain_s"] > 1
    )
    if drains:
        summary += (
            f" After each submit round the worker ran the backlog at "
            f"{drains[(len(drains) - 1) // 2]:,.0f} jobs/s (median; fake engine, 1 slot)."
        )
    print(summary)
    if args.no_doc:
        return
    if len(results) < 2:
        print("not updating the docs: the table there has both log levels")
        return
    noisiest = max(r["other_cpu"] for runs in results.values() for rs in runs.values() for r in rs)
    if noisiest > NOISY and not args.force_doc:
        print(f"not updating the docs: other processes used up to {noisiest:.2f} cores")
        return
    body = "\n".join([
        machine_line(info),
        "",
        f"{args.concurrency} connections, {args.rounds} rounds of {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured per endpoint (healthz and submit alternate); the table "
        "shows the median round. Submit rates of every round: "
        + "; ".join(f"{lvl}: {s}" for lvl, s in spread.items()) + ".",
        "",
        result_table,
        "",
        summary,
    ])  # fmt: skip
    update_doc("queue_submit", body)


if __name__ == "__main__":
    main()
