"""Batch latency: the fixed cost of a small batch against the same requests as sync chats.

One ``inferq serve`` (its default models: the embedded SmolLM2-135M on llama.cpp),
driven through the official ``openai`` SDK the way a client would. Every round,
in one sitting and on the same server:

* **sync 1**: one ``chat.completions.create`` (max_tokens 8, temperature 0);
* **batch 1**: the same request as a 1-row batch, end to end: ``files.create``
  (purpose batch), ``batches.create``, ``batches.retrieve`` every ``--poll`` s
  (0.02) until it has ended, ``files.content`` of the output file;
* **sync 8** and **batch 8**: 8 different requests, back to back as sync chats, then
  as one 8-row batch the same way.

The table gives the medians over ``--rounds`` rounds (after one warm-up round) and
the ratios batch / sync, against the targets (1 row: at most 2x; 8 rows: at most
1.3x). The batch's own timestamps (floats in the store) split its time: upload and
create, validation, the wait before the first row is claimed, the rows, the wait from
the last row's end to finalizing, finalizing, and the client's wait from the end to
its download done.

    .venv/bin/python bench/batch_latency.py [--rounds 7] [--poll 0.02] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import OpenAI

from _common import (
    BATCH_ENDED,
    NOISY,
    Server,
    batch_record,
    batch_row_spans,
    machine,
    machine_line,
    table,
    update_doc,
    wait_until_quiet,
)

MODEL = "smollm2-135m-instruct"
MAX_TOKENS = 8
PROMPTS = [
    "Name a colour.", "Say hello in French.", "What is two plus two?", "Name a fruit.",
    "Give a synonym of quick.", "Name a planet.", "Say one word about the sea.",
    "Name a month.",
]  # fmt: skip


def body(i: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }


def sync(client: OpenAI, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        client.chat.completions.create(**body(i))
    return time.perf_counter() - t0


def batch(client: OpenAI, n: int, work: Path, poll: float) -> tuple[float, str, float]:
    """One n-row batch end to end; returns (seconds, batch id, wall time it was seen ended)."""
    path = work / f"rows-{n}.jsonl"
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body(i)}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    t0 = time.perf_counter()
    with path.open("rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
    created = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while True:
        seen = client.batches.retrieve(created.id)
        if seen.status in BATCH_ENDED:
            break
        time.sleep(poll)
    ended_seen = time.time()
    if seen.status != "completed" or seen.output_file_id is None:
        raise RuntimeError(f"batch {seen.id} ended {seen.status}: {seen.errors}")
    output = client.files.content(seen.output_file_id).text
    elapsed = time.perf_counter() - t0
    if len(output.splitlines()) != n:
        raise RuntimeError(f"batch {seen.id}: {len(output.splitlines())} output lines, not {n}")
    return elapsed, seen.id, ended_seen


def split(db: Path, batch_id: str, started: float, ended_seen: float) -> dict[str, float]:
    """Where a batch's time went, from its stored timestamps (seconds)."""
    rec = batch_record(db, batch_id)
    spans = batch_row_spans(db, batch_id)
    first_claim = min(c for _, c, _ in spans)
    last_end = max(f for _, _, f in spans)
    return {
        "upload + create": rec["created_at"] - started,
        "validation": rec["validated_at"] - rec["created_at"],
        "to first claim": first_claim - rec["validated_at"],
        "rows": last_end - first_claim,
        "to finalizing": rec["finalizing_at"] - last_end,
        "finalizing": rec["finished_at"] - rec["finalizing_at"],
        "client sees the end": ended_seen - rec["finished_at"],
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--poll", type=float, default=0.02, help="client poll interval (s)")
    parser.add_argument("--no-doc", action="store_true", help="do not update the docs")
    parser.add_argument("--no-wait", action="store_true", help="skip waiting for quiet")
    args = parser.parse_args()

    busy_before = 0.0 if args.no_wait else wait_until_quiet()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="inferq-bench-latency-") as tmp:
        work = Path(tmp)
        data = work / "data"
        server = Server(data)
        key = server.create_key("bench")
        times: dict[str, list[float]] = {"sync 1": [], "batch 1": [], "sync 8": [], "batch 8": []}
        parts: dict[int, list[dict[str, float]]] = {1: [], 8: []}
        with server:
            client = OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
            for round_ in range(args.rounds + 1):
                measured = round_ > 0
                for n in (1, 8):
                    s = sync(client, n)
                    started = time.time()
                    b, batch_id, ended_seen = batch(client, n, work, args.poll)
                    if not measured:
                        continue
                    times[f"sync {n}"].append(s)
                    times[f"batch {n}"].append(b)
                    parts[n].append(split(data / "inferq.db", batch_id, started, ended_seen))
                if measured:
                    print(
                        f"round {round_}: "
                        + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in times.items()),
                        flush=True,
                    )

    med = {k: median(v) for k, v in times.items()}
    ratio1 = med["batch 1"] / med["sync 1"]
    ratio8 = med["batch 8"] / med["sync 8"]
    rows = [
        [k, f"{med[k] * 1000:.0f}", f"{min(v) * 1000:.0f}", f"{max(v) * 1000:.0f}"]
        for k, v in times.items()
    ]
    steps = list(parts[1][0])
    split_rows = [
        [step, *(f"{median([p[step] for p in parts[n]]) * 1000:.0f}" for n in (1, 8))]
        for step in steps
    ]
    body_md = "\n\n".join(
        [
            machine_line(info),
            f"{args.rounds} measured rounds after 1 warm-up round, one server "
            f"(default models), the openai SDK; max_tokens {MAX_TOKENS}, temperature 0; "
            f"the batch client polls every {args.poll * 1000:.0f} ms.",
            table(["", "median ms", "min ms", "max ms"], rows),
            f"batch 1 / sync 1: **{ratio1:.2f}x** (target at most 2x); "
            f"batch 8 / sync 8: **{ratio8:.2f}x** (target at most 1.3x).",
            "Where the batches' time went (medians, from the stored timestamps):",
            table(["step", "1 row ms", "8 rows ms"], split_rows),
            "Other processes' load before the run: not measured (--no-wait)."
            if args.no_wait
            else f"Other processes used {busy_before:.2f} cores before the run.",
        ]
    )
    print()
    print(body_md)
    if args.no_doc:
        return
    if busy_before > NOISY:
        print("\nthe machine was busy: docs not updated")
        return
    update_doc("batch_latency", body_md)


if __name__ == "__main__":
    main()
