"""Batch throughput: a file of chat requests through inferq's batch API, next to
a plain loop over the same requests with llama-cpp-python.

inferq: ``POST /v1/files`` (multipart, purpose=batch) with a JSONL file of N
rows, ``POST /v1/batches`` (endpoint /v1/chat/completions), ``GET
/v1/batches/{id}`` every 0.5 s until it is completed, then ``GET
/v1/files/{output_file_id}/content``. The server runs its default models (the
embedded SmolLM2-135M Q4_1 on llama.cpp) with whatever slots and threads its
engine gives them. Its time runs from the start of the upload to the end of the
download.

Loops: the same rows, one after another, in this process, the way a plain
llama-cpp-python program runs them (sync_overhead's ``Direct``: the GGUF's chat
template, a clean KV cache, ``create_completion`` streamed with the same
sampling, n_ctx and n_batch as inferq's defaults), once per ``--threads`` value:
by default on every core, as the default engine's threads run (``--threads 1,2``
adds a one-thread loop).

The sides take turns of ``--slice`` seconds (10) while the batch runs, the
server every other turn: a loop runs with the server stopped (SIGSTOP), then the
server runs alone while the loops wait. The speed of a small shared VM drifts
by 10-20% over minutes; turns this short put every side through the same
drift. Each side's time is its own (the server's: wall time less the time it
was stopped; the rows' and the batch's timestamps likewise). Every row's text
is compared with inferq's (temperature 0). Also reported: the server's time
split, from the batch's and the rows' own timestamps (the store keeps them as
floats; the API rounds them to seconds).

``--tuning FILE`` gives the server the ``tuning.toml`` that ``inferq tune`` wrote on this
machine (its engine then runs the tuned settings); ``--loop-flash-attention`` turns flash
attention on in the loops as well.

    .venv/bin/python bench/batch_throughput.py [--rows 500] [--max-tokens 64] [--quick]
        [--tuning FILE] [--loop-flash-attention]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from _common import (
    BATCH_ENDED,
    NOISY,
    Server,
    batch_record,
    batch_row_spans,
    busy_cpu_seconds,
    cpu_seconds,
    create_batch,
    download_file,
    machine,
    machine_line,
    percentile,
    table,
    update_doc,
    upload_file,
    wait_until_quiet,
)
from sync_overhead import BATCH, CONTEXT, Direct, gguf_path

MODEL = "smollm2-135m-instruct"
TOPICS = [
    "photosynthesis", "a hash table", "compound interest", "the water cycle",
    "public key cryptography", "how vaccines work", "plate tectonics", "binary search",
    "supply and demand", "the greenhouse effect", "how a bicycle stays upright",
    "recursion", "inflation", "how bread rises", "the immune system", "an electric motor",
    "machine learning", "the tides", "a database index", "how airplanes fly",
    "the stock market", "black holes", "caching", "composting", "the printing press",
]  # fmt: skip
AUDIENCES = [
    "a ten-year-old", "a busy manager", "a new programmer", "a retired teacher",
    "a high school student", "a tourist", "a farmer", "a nurse", "an artist", "a chef",
    "a journalist", "a pilot", "a librarian", "a musician", "a carpenter", "a lawyer",
    "a scientist", "a shop owner", "a student athlete", "a grandparent",
]  # fmt: skip


def prompt(i: int) -> str:
    """Row ``i``'s user message (~30 tokens; 500 distinct ones)."""
    topic = TOPICS[i % len(TOPICS)]
    audience = AUDIENCES[(i // len(TOPICS)) % len(AUDIENCES)]
    return (
        f"Please explain {topic} to {audience} in two or three short sentences, "
        "then give one simple example from everyday life."
    )


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float = 0.0


class Loop(Direct):
    """sync_overhead's Direct (inferq's ``_Slot`` path), also counting tokens."""

    def complete(self, content: str, max_tokens: int) -> Answer:
        t0 = time.perf_counter()
        formatted = self.formatter(messages=[{"role": "user", "content": content}])
        prompt = self.llm.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        never = self.llama_cpp.StoppingCriteriaList([lambda ids, logits: False])
        self.llm.reset()  # a clean KV cache, as inferq's engine
        stream = self.llm.create_completion(
            prompt,
            max_tokens=max_tokens,
            temperature=0.0,
            top_p=1.0,
            top_k=40,
            stop=[],
            seed=None,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            stopping_criteria=never,
            stream=True,
        )
        text = "".join(chunk["choices"][0]["text"] for chunk in stream)
        # inferq counts completion tokens by re-tokenizing the text; so does the loop
        completion = len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        return Answer(text, len(prompt), completion, time.perf_counter() - t0)


def write_input(path: Path, rows: int, max_tokens: int) -> None:
    with path.open("w") as f:
        for i in range(rows):
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": prompt(i)}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            line = {"custom_id": f"row-{i}", "method": "POST", "url": "/v1/chat/completions"}
            f.write(json.dumps({**line, "body": body}) + "\n")


def read_output(path: Path) -> dict[str, Answer]:
    answers: dict[str, Answer] = {}
    with path.open() as f:
        for raw in f:
            line = json.loads(raw)
            body = line["response"]["body"]
            usage = body["usage"]
            answers[line["custom_id"]] = Answer(
                body["choices"][0]["message"]["content"],
                usage["prompt_tokens"],
                usage["completion_tokens"],
            )
    return answers


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f}"


def paused_within(pauses: list[tuple[float, float]], start: float, end: float) -> float:
    """How much of [start, end] (wall clock) the server spent stopped."""
    return sum(max(0.0, min(end, p1) - max(start, p0)) for p0, p1 in pauses)


class LoopSide:
    """One plain loop (a thread count) with its own rows still to run and answers."""

    def __init__(self, threads: int, rows: int, *, flash_attn: bool = False) -> None:
        self.threads = threads
        self.flash_attn = flash_attn
        self.loop = Loop(gguf_path(), threads, flash_attn=flash_attn)
        self.pending = list(range(rows))
        self.answers: dict[str, Answer] = {}
        self.cpu = 0.0

    @property
    def name(self) -> str:
        flash = ", flash attention" if self.flash_attn else ""
        return f"plain llama-cpp-python loop, n_threads = {self.threads}{flash}"

    def turn(self, budget: float, max_tokens: int) -> None:
        """Run rows for ``budget`` s (at least one)."""
        t0, c0 = time.perf_counter(), time.process_time()
        while self.pending and (time.perf_counter() - t0 < budget):
            i = self.pending.pop(0)
            self.answers[f"row-{i}"] = self.loop.complete(prompt(i), max_tokens)
        self.cpu += time.process_time() - c0

    @property
    def seconds(self) -> float:
        return sum(a.seconds for a in self.answers.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--max-tokens", type=int, default=64)
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--threads",
        default=str(cores),
        help="llama.cpp threads of each plain loop, comma-separated, one loop each (default "
        f"{cores}: every core, like inferq's default engine; 1 adds a one-thread loop)",
    )
    parser.add_argument(
        "--slice", type=float, default=10.0, help="seconds per turn of each side (time-slicing)"
    )
    parser.add_argument(
        "--tuning",
        type=Path,
        help="a tuning.toml written by `inferq tune`, put in the server's data dir so that "
        "its engine runs with the tuned settings (default: the engine's own defaults)",
    )
    parser.add_argument(
        "--loop-flash-attention",
        action="store_true",
        help="run each plain loop with flash attention on as well",
    )
    parser.add_argument(
        "--quick", action="store_true", help="40 rows, for trying it out (implies --no-doc)"
    )
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument(
        "--force-doc", action="store_true", help="update the docs even from a noisy run"
    )
    args = parser.parse_args()
    rows = 40 if args.quick else args.rows
    info = machine()
    print(machine_line(info))

    loops = [
        LoopSide(int(n), rows, flash_attn=args.loop_flash_attention)
        for n in args.threads.split(",")
    ]
    pauses: list[tuple[float, float]] = []  # when the server was stopped (wall clock)
    seen: dict[str, float] = {}  # batch status -> when the client first saw it

    def loop_turn(server: Server, side: LoopSide) -> None:
        """Stop the server, give a loop its turn, resume the server."""
        os.kill(server.pid, signal.SIGSTOP)
        p0 = time.time()
        try:
            side.turn(args.slice, args.max_tokens)
        finally:
            os.kill(server.pid, signal.SIGCONT)
            pauses.append((p0, time.time()))

    with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "batch-input.jsonl"
        write_input(source, rows, args.max_tokens)
        data_dir = tmp / "data"
        if args.tuning is not None:
            data_dir.mkdir()
            shutil.copyfile(args.tuning, data_dir / "tuning.toml")
        with Server(data_dir) as server:
            key = server.create_key("bench")
            client = httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
            )

            def status(batch_id: str) -> dict[str, Any]:
                response = client.get(f"/v1/batches/{batch_id}")
                response.raise_for_status()
                found: dict[str, Any] = response.json()
                seen.setdefault(found["status"], time.time())
                return found

            def server_turn(batch_id: str) -> dict[str, Any]:
                """The server runs alone for a slice (polled every 0.5 s)."""
                turn_end = time.time() + args.slice
                while True:
                    batch = status(batch_id)
                    if batch["status"] in BATCH_ENDED or time.time() >= turn_end:
                        return batch
                    time.sleep(0.5)

            with client:
                # warm every side (page cache of the GGUF, first-call costs)
                for side in loops:
                    side.loop.complete(prompt(0), 8)
                warm = client.post(
                    "/v1/chat/completions",
                    json={
                        "model": MODEL,
                        "messages": [{"role": "user", "content": prompt(0)}],
                        "max_tokens": 8,
                    },
                )
                warm.raise_for_status()
                wait_until_quiet()
                own0 = resource.getrusage(resource.RUSAGE_SELF)
                busy0, server0 = busy_cpu_seconds(), cpu_seconds(server.pid)
                wall0 = time.monotonic()

                print(f"{rows} rows each side, turns of {args.slice:g} s", flush=True)
                t0 = time.time()
                record = upload_file(client, source)
                t_uploaded = time.time()
                created = create_batch(client, record["id"])
                batch = status(created["id"])
                turn = 0
                while batch["status"] not in BATCH_ENDED:
                    waiting = [side for side in loops if side.pending]
                    if batch["status"] == "in_progress" and waiting:
                        side = waiting[turn % len(waiting)]
                        turn += 1
                        loop_turn(server, side)
                        print(f"  {side.name}: {rows - len(side.pending)}/{rows} rows", flush=True)
                    batch = server_turn(created["id"])
                if batch["status"] != "completed" or not batch["output_file_id"]:
                    raise RuntimeError(f"the batch ended {batch['status']}: {batch}")
                t_seen = time.time()
                output = tmp / "batch-output.jsonl"
                download_file(client, batch["output_file_id"], output)
                t_end = time.time()
                batch_cpu = cpu_seconds(server.pid) - server0
                for side in loops:  # rows left once the batch has ended
                    while side.pending:
                        loop_turn(server, side)

                wall = time.monotonic() - wall0
                own1 = resource.getrusage(resource.RUSAGE_SELF)
                own = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
                server_cpu = cpu_seconds(server.pid) - server0
                other_cpu = max(0.0, (busy_cpu_seconds() - busy0 - own - server_cpu) / wall)

            db = data_dir / "inferq.db"
            stored = batch_record(db, created["id"])
            spans = batch_row_spans(db, created["id"])
        served = read_output(output)

    # -- the numbers ---------------------------------------------------------------

    def active(start: float, end: float) -> float:
        """Seconds of [start, end] in which the server was not stopped."""
        return end - start - paused_within(pauses, start, end)

    inferq_s = active(t0, t_end)
    served_tokens = sum(a.completion_tokens for a in served.values())
    created_at = float(stored["created_at"])
    validated_at = float(stored["validated_at"])
    finalizing_at = float(stored["finalizing_at"])
    finished_at = float(stored["finished_at"])
    first_claim = spans[0][1]
    last_finish = max(f for _, _, f in spans)
    run_s = active(first_claim, last_finish)
    row_ms = [active(c, f) * 1e3 for _, c, f in spans]
    # when at least one row ran, as disjoint intervals (rows may overlap: several slots)
    union: list[list[float]] = []
    for _, c, f in spans:  # spans are in claim order
        if union and c <= union[-1][1]:
            union[-1][1] = max(union[-1][1], f)
        else:
            union.append([c, f])
    idle_s = run_s - sum(active(u0, u1) for u0, u1 in union)
    concurrency = sum(row_ms) / 1e3 / run_s
    split = [
        ["upload (client: POST /v1/files)", fmt_s(active(t0, t_uploaded))],
        ["create -> validated (validating: parse, insert rows)",
         fmt_s(active(created_at, validated_at))],
        ["validated -> first row claimed", fmt_s(active(validated_at, first_claim))],
        ["first row claimed -> last row finished (execution)", fmt_s(run_s)],
        ["last row finished -> finalizing", fmt_s(active(last_finish, finalizing_at))],
        ["finalizing -> completed (result files written)",
         fmt_s(active(finalizing_at, finished_at))],
        ["completed -> seen by the client (0.5 s polls)",
         fmt_s(active(finished_at, seen["completed"]))],
        ["download (client: GET /v1/files/{id}/content)", fmt_s(t_end - t_seen)],
    ]  # fmt: skip
    split_table = table(["inferq's batch, phase", "seconds"], split)

    header = [
        "", "rows", "seconds", "rows/s", "output tok/s", "output tokens", "per row p50 ms",
        "CPU cores", "texts = inferq's",
    ]  # fmt: skip
    result_rows: list[list[object]] = [
        ["inferq batch API (upload to download)", len(served), fmt_s(inferq_s),
         f"{len(served) / inferq_s:.3f}", f"{served_tokens / inferq_s:.1f}", served_tokens,
         f"{percentile(row_ms, 50):.0f}", f"{batch_cpu / inferq_s:.2f}", "-"],
        ["inferq, execution only (first claim to last row)", len(spans), fmt_s(run_s),
         f"{len(spans) / run_s:.3f}", f"{served_tokens / run_s:.1f}", served_tokens,
         f"{percentile(row_ms, 50):.0f}", "", "-"],
    ]  # fmt: skip
    ratios: list[str] = []
    matching: list[str] = []
    best_rps = 0.0
    for side in loops:
        tokens = sum(a.completion_tokens for a in side.answers.values())
        same = sum(
            1 for cid, a in side.answers.items() if cid in served and served[cid].text == a.text
        )
        rps = len(side.answers) / side.seconds
        best_rps = max(best_rps, rps)
        result_rows.append([
            side.name, len(side.answers), fmt_s(side.seconds), f"{rps:.3f}",
            f"{tokens / side.seconds:.1f}", tokens,
            f"{percentile([a.seconds * 1e3 for a in side.answers.values()], 50):.0f}",
            f"{side.cpu / side.seconds:.2f}", f"{same} of {len(side.answers)}",
        ])  # fmt: skip
        ratios.append(
            f"{len(served) / inferq_s / rps:.2f}x the loop with n_threads = {side.threads} "
            f"(output tokens/s {served_tokens / inferq_s / (tokens / side.seconds):.2f}x)"
        )
        matching.append(f"{same} of {len(side.answers)} (n_threads = {side.threads})")
    result_table = table(header, result_rows)
    ratio = len(served) / inferq_s / best_rps
    verdict = (
        "meets the target: no slower than the faster plain loop"
        if ratio >= 1.0
        else f"{(1 - ratio) * 100:.1f}% slower than the faster plain loop (target: no slower)"
    )
    prompt_mean = sum(a.prompt_tokens for a in served.values()) / len(served)
    summary = (
        f"inferq rows/s: {'; '.join(ratios)}: {verdict}. During execution "
        f"{concurrency:.2f} rows ran at once on average, and no row was running for "
        f"{idle_s:.2f} s of it. Texts identical to inferq's at temperature 0: "
        f"{', '.join(matching)}. Prompts {prompt_mean:.0f} tokens on average with the chat "
        f"template; {len(pauses)} loop turns; server CPU {batch_cpu:.0f} s; other "
        f"processes used {other_cpu:.2f} cores meanwhile."
    )
    print()
    print(result_table)
    print()
    print(split_table)
    print()
    print(summary)
    if args.no_doc or args.quick:
        return
    if other_cpu > NOISY and not args.force_doc:
        print(f"not updating the docs: other processes used {other_cpu:.2f} cores (--force-doc)")
        return
    settings = (
        "the settings of the tuning file given"
        if args.tuning
        else "its engine's own slots and threads"
    )
    doc = "\n".join([
        machine_line(info),
        "",
        f"{rows} rows, max_tokens {args.max_tokens}, temperature 0, a ~30-word user "
        "message per row (500 distinct ones); the server with its default models "
        f"({settings}); each loop with context "
        f"{CONTEXT} and batch {BATCH} as inferq's defaults. The sides took turns of "
        f"{args.slice:g} s (the server stopped while a loop ran); times are each side's own.",
        "",
        result_table,
        "",
        split_table,
        "",
        summary,
    ])  # fmt: skip
    update_doc("batch_throughput", doc)


if __name__ == "__main__":
    main()
