"""The sync path: what inferq itself spends on one sync chat request, engine aside.

One ``inferq serve`` process (SQLite, ``synchronous=FULL`` as always: every job is
committed before its answer) with the fake engine (``token_delay = 0``: the generation
costs next to nothing, so the request's time is inferq's own), 4 slots, log level info.
One keep-alive client (``http.client``, lighter than an HTTP library) sends one request
at a time, in blocks that rotate between ``POST /v1/chat/completions``, the same request
streamed (``"stream": true``, read to its ``[DONE]``) and ``GET /healthz`` (the HTTP
floor: uvicorn, the middlewares, no store), so drift hits all three. Reported: p50 and
p90 of each (and of a stream's first piece of text), the sync request's p50 above the
floor, the server's CPU per request (every thread, from /proc), and how many jobs were
claimed in the transaction that stored them (``claimed_at == created_at``).

    .venv/bin/python bench/sync_path.py [--requests 2000] [--blocks 8] [--no-doc]
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

from _common import (
    NOISY,
    Server,
    busy_cpu_seconds,
    cpu_seconds,
    machine,
    machine_line,
    percentile,
    table,
    update_doc,
    wait_until_quiet,
)

MODELS = '[models.fake]\nengine = "fake"\ncontext_length = 512\nslots = 4\n'
CHAT = {
    "model": "fake",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 8,
}
BODY = json.dumps(CHAT).encode()
STREAM_BODY = json.dumps({**CHAT, "stream": True}).encode()
KINDS = ("sync", "stream", "healthz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests of each")
    parser.add_argument("--blocks", type=int, default=8, help="alternating blocks of each")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests of each")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    args = parser.parse_args()
    info = machine()
    print(machine_line(info))
    per_block = max(1, args.requests // args.blocks)
    ms: dict[str, list[float]] = {kind: [] for kind in (*KINDS, "first")}
    cpu: dict[str, float] = dict.fromkeys(KINDS, 0.0)
    with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp:
        models = Path(tmp) / "models.toml"
        models.write_text(MODELS)
        if not args.no_wait:
            wait_until_quiet()
        with Server(Path(tmp) / "data", models_file=models) as server:
            key = server.create_key("bench")
            conn = http.client.HTTPConnection("127.0.0.1", server.port)
            headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}

            def once(kind: str) -> float:
                t0 = time.perf_counter()
                if kind == "healthz":
                    conn.request("GET", "/healthz")
                else:
                    body = STREAM_BODY if kind == "stream" else BODY
                    conn.request("POST", "/v1/chat/completions", body, headers)
                response = conn.getresponse()
                if kind == "stream":
                    first = None
                    while line := response.readline():
                        if first is None and b'"content":"' in line and b'"content":""' not in line:
                            first = time.perf_counter() - t0
                    if first is None or response.status != 200:
                        raise RuntimeError(f"stream: HTTP {response.status}, no text")
                    ms["first"].append(first * 1e3)
                response.read()
                elapsed = time.perf_counter() - t0
                if response.status != 200:
                    raise RuntimeError(f"{kind}: HTTP {response.status}")
                return elapsed

            for _ in range(args.warmup):
                for kind in KINDS:
                    once(kind)
            ms["first"].clear()
            busy0, wall0 = busy_cpu_seconds(), time.monotonic()
            own0 = resource.getrusage(resource.RUSAGE_SELF)
            ours = 0.0
            for block in range(len(KINDS) * args.blocks):
                # sync, stream, healthz, healthz, stream, sync, sync…
                turn, at = divmod(block, len(KINDS))
                kind = KINDS[at] if turn % 2 == 0 else KINDS[-1 - at]
                before = cpu_seconds(server.pid)
                ms[kind] += [once(kind) * 1e3 for _ in range(per_block)]
                spent = cpu_seconds(server.pid) - before
                cpu[kind] += spent
                ours += spent
            wall = time.monotonic() - wall0
            own1 = resource.getrusage(resource.RUSAGE_SELF)
            ours += own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
            other = max(0.0, (busy_cpu_seconds() - busy0 - ours) / wall)
            conn.close()
        db = sqlite3.connect(Path(tmp) / "data" / "inferq.db")
        claimed_at_insert, jobs = db.execute(
            "SELECT SUM(claimed_at = created_at), COUNT(*) FROM jobs"
        ).fetchone()
        db.close()

    n = len(ms["sync"])
    rows = [
        [
            label,
            f"{percentile(ms[kind], 50):.2f}",
            f"{percentile(ms[kind], 90):.2f}",
            f"{cpu[kind] / len(ms[kind]) * 1e3:.3f}" if kind in cpu else "",
        ]
        for label, kind in (
            ("POST /v1/chat/completions (fake engine)", "sync"),
            ("the same, streamed: to [DONE]", "stream"),
            ("the same, streamed: to the first text", "first"),
            ("GET /healthz (HTTP floor)", "healthz"),
        )
    ]
    above = percentile(ms["sync"], 50) - percentile(ms["healthz"], 50)
    result = table(["", "p50 ms", "p90 ms", "server CPU ms/request"], rows)
    summary = (
        f"Sync p50 {percentile(ms['sync'], 50):.2f} ms, {above:.2f} ms above the HTTP floor; "
        f"streamed {percentile(ms['stream'], 50):.2f} ms to its end; "
        f"{claimed_at_insert or 0} of {jobs} jobs claimed in the transaction that stored them; "
        f"other processes used about {other:.2f} cores meanwhile."
    )
    print()
    print(result)
    print(summary)
    if args.no_doc:
        return
    if other > NOISY:
        print(f"not updating the docs: other processes used {other:.2f} cores")
        return
    update_doc(
        "sync_path",
        "\n".join(
            [
                machine_line(info),
                "",
                f"{n} sync requests, {len(ms['stream'])} streamed and {len(ms['healthz'])} "
                f"healthz requests, one at a time, in {len(KINDS) * args.blocks} rotating "
                f"blocks after {args.warmup} warm-up requests of each; fake engine "
                "(token_delay 0), 4 slots, SQLite with synchronous=FULL, log level info; "
                "client: http.client, keep-alive.",
                "",
                result,
                "",
                summary,
            ]
        ),
    )


if __name__ == "__main__":
    main()
