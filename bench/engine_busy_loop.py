"""The llama.cpp decode thread beside a busy event loop, against the machine as busy.

One ``inferq serve`` with the default chat model, its llama.cpp context on one thread
(``threads = 1``, 8 slots). Its main thread, the event loop, is pinned to CPU 0 and
every other thread of it to CPU 1, so the decode thread has a core of its own and
shares with the loop only the GIL. Each round runs the same 16-row batch (48 tokens a
row, temperature 0) through the batch API three ways, in turn:

- idle: nothing else runs;
- beside a flood at this server: ``bench/_loadgen.py`` (32 keep-alive connections of
  ``GET /healthz``, pinned to CPU 0 with the loop) keeps the event loop busy;
- beside a flood at another server, the control: the same flood, at a second
  ``inferq serve`` (the fake engine) pinned to CPU 0: the machine as busy, the process
  not.

Reported: output tokens/s of each (the median over ``--rounds``; completion tokens over
the time from the batch's creation to its end as the client polls it), each against the
control. Not against idle: on the 2-core machine measured, consecutive idle batches ran
at either about 69 or about 90 tokens/s, while the control held steady within 5%. A
first batch, unmeasured, warms the model. Needs at least two CPUs and
``taskset`` (util-linux).

    .venv/bin/python bench/engine_busy_loop.py [--rounds 3] [--no-doc]

Compare trees with ``bench/interleave.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from _common import (
    PYTHON,
    ROOT,
    Server,
    busy_cpu_seconds,
    create_batch,
    machine,
    machine_line,
    table,
    update_doc,
    upload_file,
    wait_batch,
    wait_until_quiet,
)

MODELS = """
[models.m]
engine = "llamacpp"
context_length = 2048
slots = 8
options = { threads = 1 }
"""
FAKE = '[models.fake]\nengine = "fake"\ncontext_length = 512\nslots = 4\n'
ROWS = 16
MAX_TOKENS = 48
SIDES = ("idle", "flood at this server", "flood at another server")


def pin(pid: int, cpus: str, *, every_thread: bool = False) -> None:
    args = ["taskset", "-p", cpus, str(pid)]
    if every_thread:
        args.insert(1, "-a")
    subprocess.run(args, check=True, capture_output=True)


def flood(port: int) -> subprocess.Popen[bytes]:
    loadgen = [PYTHON, str(ROOT / "bench" / "_loadgen.py"), "--port", str(port)]
    return subprocess.Popen(
        ["taskset", "1", *loadgen, "--concurrency", "32", "--duration", "3600"],
        stdout=subprocess.DEVNULL,
    )


def rows_file(path: Path) -> Path:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "m",
                "messages": [{"role": "user", "content": f"Tell me a story about {i}."}],
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            },
        }
        for i in range(ROWS)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def run_batch(client: httpx.Client, rows: Path) -> float:
    """Output tokens/s of one batch, from its creation to its end."""
    uploaded = upload_file(client, rows)
    t0 = time.perf_counter()
    batch = create_batch(client, uploaded["id"])
    done = wait_batch(client, batch["id"], interval=0.2)
    wall = time.perf_counter() - t0
    if done["status"] != "completed":
        raise RuntimeError(f"batch {done['id']} ended {done['status']}")
    output = client.get(f"/v1/files/{done['output_file_id']}/content").text
    tokens = sum(
        json.loads(line)["response"]["body"]["usage"]["completion_tokens"]
        for line in output.splitlines()
    )
    return tokens / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs at least two CPUs")
    info = machine()
    print(machine_line(info), flush=True)
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp:
        work = Path(tmp)
        (work / "m.toml").write_text(MODELS)
        (work / "fake.toml").write_text(FAKE)
        rows = rows_file(work / "rows.jsonl")
        if not args.no_wait:
            wait_until_quiet()
        with (
            Server(work / "data", models_file=work / "m.toml") as server,
            Server(work / "other", models_file=work / "fake.toml") as other,
        ):
            pin(server.pid, "2", every_thread=True)
            pin(server.pid, "1")  # the main thread: the event loop
            pin(other.pid, "1", every_thread=True)
            os.sched_setaffinity(0, {0})
            key = server.create_key("bench")
            headers = {"authorization": f"Bearer {key}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=600) as client:
                run_batch(client, rows)  # warm-up
                busy0, wall0 = busy_cpu_seconds(), time.monotonic()
                for _ in range(args.rounds):
                    for side in SIDES:
                        load = None
                        if side != "idle":
                            load = flood(server.port if side == SIDES[1] else other.port)
                            time.sleep(1.0)
                        try:
                            rate = run_batch(client, rows)
                        finally:
                            if load is not None:
                                load.terminate()
                                load.wait()
                        rates[side].append(rate)
                        print(f"{side}: {rate:.1f} tokens/s", flush=True)
                busy = (busy_cpu_seconds() - busy0) / (time.monotonic() - wall0)
    control = statistics.median(rates[SIDES[2]])
    result = table(
        ["side", "output tokens/s, each round", "median", "vs the control"],
        [
            [
                side,
                ", ".join(f"{r:.1f}" for r in rates[side]),
                f"{statistics.median(rates[side]):.1f}",
                f"{statistics.median(rates[side]) / control:.2f}",
            ]
            for side in SIDES
        ],
    )
    print()
    print(result)
    # both cores are meant to be busy here, so other processes' share cannot be told
    # apart: the machine is checked for quiet before the run (wait_until_quiet)
    print(f"cores busy during the rounds: {busy:.2f}")
    if args.no_doc:
        return
    update_doc(
        "engine_busy_loop",
        "\n".join(
            [
                machine_line(info),
                "",
                f"{args.rounds} rounds of a {ROWS}-row batch ({MAX_TOKENS} tokens a row, "
                "temperature 0) on the default chat model, llama.cpp on one thread, 8 slots; "
                "the server's event loop pinned to CPU 0, its other threads to CPU 1; the "
                "floods: 32 connections of GET /healthz, on CPU 0.",
                "",
                result,
            ]
        ),
    )


if __name__ == "__main__":
    main()
