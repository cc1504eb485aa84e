"""Anthropic message batches: what a create costs, and the results file.

``POST /v1/messages/batches`` checks every request before the batch exists (as
``POST /v1/messages`` would), writes them as a JSONL file and creates the batch, all
before it answers; so its time and memory grow with the number of requests. One real
``inferq serve`` (SQLite) with the fake engine (no generation cost), driven with httpx
and the ``x-api-key`` header as the ``anthropic`` SDK sends it. For each size (a fresh
server each): the create's wall time (the body prepared beforehand), the server's peak
RSS (VmHWM) before and after it, then the batch run to its end and its results
streamed (``GET .../results``), counting the lines.

    .venv/bin/python bench/message_batches.py [--sizes 1000,10000,100000] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import NOISY, Server, machine, machine_line, table, update_doc, wait_until_quiet

MODELS = """\
[models.fake]
engine = "fake"
slots = 4
context_length = 512
"""


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def body(n: int) -> bytes:
    requests = [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "fake",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": f"request {i} " + "x" * 100}],
            },
        }
        for i in range(n)
    ]
    return json.dumps({"requests": requests}).encode()


def measure(root: Path, n: int) -> dict[str, Any]:
    models = root / f"models-{n}.toml"
    models.write_text(MODELS)
    with Server(root / f"data-{n}", models_file=models) as server:
        headers = {"x-api-key": server.create_key("bench"), "content-type": "application/json"}
        data = body(n)
        before = peak_rss_mib(server.pid)
        with httpx.Client(base_url=server.url, headers=headers, timeout=900) as client:
            started = time.perf_counter()
            created = client.post("/v1/messages/batches", content=data)
            create_s = time.perf_counter() - started
            created.raise_for_status()
            after = peak_rss_mib(server.pid)
            batch_id = created.json()["id"]
            started = time.perf_counter()
            while (
                client.get(f"/v1/messages/batches/{batch_id}").json()["processing_status"]
                != "ended"
            ):
                time.sleep(0.2)
            run_s = time.perf_counter() - started
            started = time.perf_counter()
            lines = client.get(f"/v1/messages/batches/{batch_id}/results").text.splitlines()
            results_s = time.perf_counter() - started
        assert len(lines) == n, f"{len(lines)} result lines for {n} requests"
    return {
        "n": n,
        "mb": len(data) / 1e6,
        "create_s": create_s,
        "per_request_ms": create_s / n * 1000,
        "rss_before": before,
        "rss_after": after,
        "run_s": run_s,
        "results_s": results_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    busy = wait_until_quiet(patience=60)
    info = machine()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            m = measure(Path(tmp), n)
            rows.append(
                [
                    f"{m['n']:,}",
                    f"{m['mb']:.1f}",
                    f"{m['create_s']:.2f}",
                    f"{m['per_request_ms']:.3f}",
                    f"{m['rss_before']:.0f} → {m['rss_after']:.0f}",
                    f"{m['run_s']:.1f}",
                    f"{m['results_s']:.2f}",
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "requests",
        "body MB",
        "create s",
        "ms / request",
        "server peak RSS MiB (before → after create)",
        "run to ended s",
        "results s",
    ]
    quiet = "" if busy <= NOISY else f" Not a quiet machine (busy {busy:.2f} of its cores)."
    report = (
        f"{machine_line(info)}\n\nFake engine (4 slots, no delay), SQLite, one fresh server "
        f"per size; requests of ~240 bytes, max_tokens 8.{quiet}\n\n{table(header, rows)}"
    )
    print(report)
    if not args.no_doc:
        update_doc("message_batches", report)


if __name__ == "__main__":
    main()
