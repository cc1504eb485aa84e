"""``inferq serve --workers N``: healthz and submit rates against the cores given to it.

Each configuration starts ``inferq serve --no-worker`` (the API processes alone, so no
engine worker competes for the cores; submitted jobs wait in the queue) under
``taskset`` with one or both of the machine's cores, with 1 or 2 API processes, on
SQLite and on PostgreSQL (a fresh data directory or schema each time). The load
generator (``bench/_loadgen.py``, keep-alive connections, one request in flight on
each) always runs on the last core, so with both cores given the server shares that
core with it (and, on PostgreSQL, with the database's own processes). Configurations
rotate round by round; the table shows each one's median round. Every acknowledged
submit is checked to be stored.

    .venv/bin/python bench/serve_workers.py [--rounds 3] [--duration 5] [--store sqlite]
        [--no-wait] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from _common import (
    NOISY,
    PYTHON,
    Server,
    _pg_rows,
    busy_cpu_seconds,
    cpu_seconds,
    machine,
    machine_line,
    postgres_schema,
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
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: (API processes, the server's cores); the load generator runs on the last core
CONFIGS = ((1, "0"), (2, "0"), (1, "0,1"), (2, "0,1"))


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += process_tree(int(child))
    return found


def tree_cpu(pids: list[int]) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for pid in pids:
        try:
            seconds[pid] = cpu_seconds(pid)
        except FileNotFoundError:
            seconds[pid] = 0.0
    return seconds


def load(server: Server, args: argparse.Namespace, last_core: int, **extra: str) -> dict[str, Any]:
    cmd = [
        "taskset", "-c", str(last_core), PYTHON, str(HERE / "_loadgen.py"),
        "--port", str(server.port), "--concurrency", str(args.concurrency),
        "--duration", str(args.duration), "--warmup", str(args.warmup),
    ]  # fmt: skip
    for name, value in extra.items():
        cmd += [f"--{name}", value]
    pids = process_tree(server.pid)
    cpu0, busy0, t0 = tree_cpu(pids), busy_cpu_seconds(), time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.monotonic() - t0
    cpu1 = tree_cpu(pids)
    result: dict[str, Any] = json.loads(done.stdout)
    per_process = sorted(((cpu1[p] - cpu0[p]) / wall for p in pids), reverse=True)
    result["server_cpu"] = sum(per_process)
    result["busiest"] = [round(c, 2) for c in per_process[:3]]
    result["other_cpu"] = max(
        0.0, (busy_cpu_seconds() - busy0) / wall - result["server_cpu"] - result["client_cpu"]
    )
    return result


def stored_jobs(server: Server) -> int:
    url = server.env.get("INFERQ_DATABASE_URL")
    if url:
        return int(_pg_rows(url, "SELECT COUNT(*) FROM jobs")[0][0])
    conn = sqlite3.connect(server.data_dir / "inferq.db")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    finally:
        conn.close()


def measure(
    work: Path, store: str, processes: int, cores: str, args: argparse.Namespace, tag: str
) -> dict[str, dict[str, Any]]:
    models = work / "models.toml"
    body = work / "body.json"
    last_core = (os.cpu_count() or 1) - 1
    options = ["--no-worker"] + (["--workers", str(processes)] if processes > 1 else [])
    schema = postgres_schema(args.database_url) if store == "postgres" else nullcontext("")
    with schema as url:
        env = {"INFERQ_DATABASE_URL": url} if url else {}
        data = work / f"data-{tag}"
        server = Server(
            data, models_file=models, log_level=args.level, env=env, args=options,
            prefix=("taskset", "-c", cores),
        )  # fmt: skip
        with server:
            time.sleep(2.0)  # every API process up and idle
            key = server.create_key("bench")
            healthz = load(server, args, last_core, path="/healthz")
            submit = load(
                server, args, last_core, path="/v1/queue/submit", method="POST",
                body=str(body), key=key,
            )  # fmt: skip
            acked = int(submit["statuses"].get("200", 0))
            stored = stored_jobs(server)
            if stored < acked:
                raise SystemExit(f"{acked} submits acknowledged, {stored} jobs stored")
    return {"healthz": healthz, "submit": submit}


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["rps"])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--level", default="info", choices=("info", "warning"))
    parser.add_argument("--store", action="append", choices=("sqlite", "postgres"))
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_URL))
    parser.add_argument(
        "--config", action="append", metavar="PROCESSES:CORES",
        help="only these configurations, e.g. 1:0 or 2:0,1 (default: all four); with it, "
        "the docs are left as they are",
    )  # fmt: skip
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs at least 2 cores")
    info = machine()
    print(machine_line(info))
    stores = args.store or ["sqlite", "postgres"]
    configs = CONFIGS
    if args.config:
        configs = tuple((int(n), cores) for n, _, cores in (c.partition(":") for c in args.config))
    runs: dict[tuple[str, int, str], list[dict[str, dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp:
        work = Path(tmp)
        (work / "models.toml").write_text(MODELS)
        (work / "body.json").write_text(json.dumps(PAYLOAD))
        for r in range(args.rounds):
            for store in stores:
                for processes, cores in configs:
                    if not args.no_wait:
                        wait_until_quiet()
                    tag = f"{store}-{processes}-{cores.replace(',', '')}-{r}"
                    res = measure(work, store, processes, cores, args, tag)
                    runs.setdefault((store, processes, cores), []).append(res)
                    h, s = res["healthz"], res["submit"]
                    print(
                        f"  round {r + 1} {store:8s} {processes} API process(es) on cores "
                        f"{cores:3s}: healthz {h['rps']:7,.0f} req/s {h['busiest']}  submit "
                        f"{s['rps']:7,.0f} req/s {s['busiest']}  client {s['client_cpu']:.2f}  "
                        f"other {max(h['other_cpu'], s['other_cpu']):.2f}",
                        flush=True,
                    )
    rows = []
    for store in stores:
        first = runs.get((store, 1, "0"), runs[(store, *configs[0])])
        base = median([x["submit"] for x in first])["rps"]
        for processes, cores in configs:
            done = runs[(store, processes, cores)]
            h = median([x["healthz"] for x in done])
            s = median([x["submit"] for x in done])
            ratios = sorted(x["submit"]["rps"] / x["healthz"]["rps"] for x in done)
            rows.append([
                store, str(processes), str(len(cores.split(","))),
                f"{h['rps']:,.0f}", f"{s['rps']:,.0f}", f"{ratios[(len(ratios) - 1) // 2]:.2f}",
                ", ".join(f"{x['submit']['rps']:,.0f}" for x in done),
                f"{s['rps'] / base:.2f}", f"{1000 * s['server_cpu'] / s['rps']:.2f}",
                " + ".join(f"{c:.2f}" for c in s["busiest"]), f"{s['client_cpu']:.2f}",
            ])  # fmt: skip
    header = [
        "store", "API processes", "cores given", "healthz req/s", "submit req/s (median)",
        "submit / healthz (median round)", "submit, each round",
        "submit vs 1 process on 1 core", "server CPU ms/submit", "busiest processes (cores)",
        "client CPU (cores)",
    ]  # fmt: skip
    result = table(header, rows)
    print()
    print(result)
    noisiest = max(
        x[k]["other_cpu"] for done in runs.values() for x in done for k in ("healthz", "submit")
    )
    if args.no_doc or args.config:  # the docs hold the whole table
        return
    if noisiest > NOISY * 2:
        print(f"not updating the docs: other processes used up to {noisiest:.2f} cores")
        return
    body = "\n".join([
        machine_line(info),
        "",
        f"`inferq serve --no-worker` under `taskset` (the cores given), {args.concurrency} "
        f"connections from a load generator pinned to the last core, log level {args.level}; "
        f"{args.rounds} rounds of {args.warmup:g} s warm-up + {args.duration:g} s measured "
        "per endpoint, configurations rotating; medians. With both cores given, the server "
        "shares the last one with the load generator (and on PostgreSQL with the database). "
        f"Other processes used up to {noisiest:.2f} cores meanwhile.",
        "",
        result,
    ])  # fmt: skip
    update_doc("serve_workers", body)


if __name__ == "__main__":
    main()
