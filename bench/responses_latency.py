"""Responses latency: what OpenAI's Responses API costs over the same chat completion.

One ``inferq serve`` (its default models: the embedded SmolLM2-135M on llama.cpp),
driven through the official ``openai`` SDK. Every round, on the same server and
prompt (max 8 output tokens, temperature 0), in an order that rotates so that drift
hits all alike:

* **chat**: ``chat.completions.create``, the baseline;
* **response**: ``responses.create``, a sync request like the chat;
* **stream**: ``responses.create(stream=True)``, read to ``response.completed``;
  also its time to the first ``response.output_text.delta``;
* **background**: ``responses.create(background=True)``, then ``responses.retrieve``
  every 20 ms until it has ended: the queue's async class end to end; and again polled
  every 200 ms (a client that polls less often leaves the server's one process, API and
  worker alike, more of the CPU).

The table gives the medians and the ratios to the chat, and the server's own part
(from the job's stored timestamps: submitted to finished, without the client's HTTP and,
for the background, its polling).

    .venv/bin/python bench/responses_latency.py [--rounds 15] [--no-doc]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from openai import OpenAI

from _common import Server, machine, machine_line, table, update_doc, wait_until_quiet

MODEL = "smollm2-135m-instruct"
MAX_TOKENS = 8
PROMPT = "Name a colour."
ENDED = {"completed", "incomplete", "failed", "cancelled"}


def chat(client: OpenAI) -> None:
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=MAX_TOKENS,
        temperature=0,
    )


def response(client: OpenAI) -> None:
    client.responses.create(model=MODEL, input=PROMPT, max_output_tokens=MAX_TOKENS, temperature=0)


def stream(client: OpenAI, first: list[float]) -> None:
    start = time.perf_counter()
    seen = False
    for event in client.responses.create(
        model=MODEL, input=PROMPT, max_output_tokens=MAX_TOKENS, temperature=0, stream=True
    ):
        if event.type == "response.output_text.delta" and not seen:
            seen = True
            first.append(time.perf_counter() - start)


def background(client: OpenAI, poll: float, ids: list[str]) -> None:
    created = client.responses.create(
        model=MODEL, input=PROMPT, max_output_tokens=MAX_TOKENS, temperature=0, background=True
    )
    while client.responses.retrieve(created.id).status not in ENDED:
        time.sleep(poll)
    ids.append(str(uuid.UUID(created.id.removeprefix("resp_"))))


def server_times(db: Path, ids: dict[str, list[str]]) -> dict[str, float]:
    """Median ms from submission to end of the jobs of each kind: the chats, the
    foreground responses (interactive class), and each background kind's own jobs."""
    conn = sqlite3.connect(db)
    try:
        found = conn.execute(
            "SELECT id, origin, service_class, finished_at - created_at FROM jobs "
            "WHERE finished_at IS NOT NULL ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    kinds: dict[str, list[float]] = {"chat": [], "response": []}
    kinds |= {name: [] for name in ids}
    for job_id, origin, service_class, seconds in found:
        if origin == "openai":
            kinds["chat"].append(seconds)
        elif origin == "openai-responses" and not service_class:  # and the streamed ones
            kinds["response"].append(seconds)
        for name, chosen in ids.items():
            if job_id in chosen[1:]:  # the first is the warm-up
                kinds[name].append(seconds)
    return {name: statistics.median(v) * 1000 for name, v in kinds.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--no-wait", action="store_true", help="skip waiting for a quiet box")
    args = parser.parse_args()
    info = machine()
    load = "not measured (--no-wait)" if args.no_wait else f"{wait_until_quiet():.2f}"
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data")
        with server:
            key = server.create_key("bench")
            client = OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0)
            first: list[float] = []
            ids: dict[str, list[str]] = {"background 20 ms": [], "background 200 ms": []}
            kinds: dict[str, Callable[[], None]] = {
                "chat": lambda: chat(client),
                "response": lambda: response(client),
                "stream": lambda: stream(client, first),
                "background 20 ms": lambda: background(client, 0.02, ids["background 20 ms"]),
                "background 200 ms": lambda: background(client, 0.2, ids["background 200 ms"]),
            }
            times: dict[str, list[float]] = {name: [] for name in kinds}
            names = list(kinds)
            for round_ in range(args.rounds + 1):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    start = time.perf_counter()
                    kinds[name]()
                    if round_:  # the first round warms up
                        times[name].append(time.perf_counter() - start)
            first = first[1:]
            served = server_times(Path(tmp) / "data" / "inferq.db", ids)
    base = statistics.median(times["chat"])
    rows = [
        (
            name,
            f"{statistics.median(values) * 1000:.0f}",
            f"{min(values) * 1000:.0f}",
            f"{max(values) * 1000:.0f}",
            f"{statistics.median(values) / base:.2f}x",
        )
        for name, values in times.items()
    ]
    body = "\n\n".join(
        [
            machine_line(info),
            f"{args.rounds} measured rounds after 1 warm-up, one server (default models), the "
            f"openai SDK; max {MAX_TOKENS} output tokens, temperature 0.",
            table(("", "median ms", "min ms", "max ms", "/ chat"), rows),
            "In the server (job submitted to finished, medians): "
            + ", ".join(f"{name} {ms:.0f} ms" for name, ms in served.items())
            + ".",
            f"stream: first delta after {statistics.median(first) * 1000:.0f} ms (median).",
            f"Other processes' load before the run: {load}.",
        ]
    )
    print(body)
    if not args.no_doc:
        update_doc("responses_latency", body)


if __name__ == "__main__":
    main()
