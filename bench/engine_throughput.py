"""Engine throughput: one batch of chat rows run four ways, output tokens per second.

The same rows (``batch_throughput``'s 500 prompts, ~30 tokens with the chat
template; ``--max-tokens`` 64, temperature 0), one side after another in this run:

1. **loop**: a plain llama-cpp-python program: one ``Llama`` (n_threads = every
   core) and ``create_chat_completion`` for each row in turn.
2. **llama_cpp.server**: llama-cpp-python's OpenAI-compatible server (same
   threads and context), ``--clients`` (8) clients posting the rows to
   ``/v1/chat/completions`` at once.
3. **inferq**: ``inferq serve`` with a models file (``--slots`` sequences batched
   continuously, 8 like the default model, threads auto, other engine options
   from ``--option``), the rows as one batch
   through the OpenAI batch API: upload, create, poll every 0.5 s, download. Time
   from the upload's start to the download's end.
4. **engine limit**: inferq's ``LlamaCppEngine`` in this process with the
   ``--limit-slots`` and ``--limit-option`` settings, every row handed to it at
   once: batched evaluation with no queue, no store, no HTTP. Time from the first
   call to the last result.

Then time to first token of a sync streaming ``POST /v1/chat/completions`` on
the same inferq server: ``--probes`` requests one after another on the idle
server, then as many while a batch keeps every slot busy (each probe preempts a
row, which runs again later).

Every side keeps llama.cpp's weights in plain CPU buffers (see
``_common.plain_cpu_buffers``). The machine is shared and small: the script
waits for a quiet machine before each side and reports the CPU other processes
used during each, and the ratios come from this one run.

    .venv/bin/python bench/engine_throughput.py [--rows 500] [--max-tokens 64] [--slots 8]
        [--option flash_attention=false] [--limit-slots 16] [--limit-option unified_kv=true]
        [--sides loop,server,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from _common import (
    NOISY,
    PYTHON,
    Server,
    busy_cpu_seconds,
    create_batch,
    download_file,
    free_port,
    machine,
    machine_line,
    percentile,
    plain_cpu_buffers,
    table,
    update_doc,
    upload_file,
    wait_batch,
    wait_until_quiet,
)
from batch_throughput import MODEL, prompt, read_output, write_input
from sync_overhead import CONTEXT, gguf_path

#: the sync request whose first token is timed. Its label is a four-digit number
#: written backwards, so the first digit changes from one probe to the next: each
#: probe shares with the prefix cache only the chat template's start (and at most
#: one digit), whether the server is idle or busy, and evaluates as many prompt
#: tokens either way.
PROBE = "{label}. Name three colours."


@dataclass
class Side:
    name: str
    rows: int
    tokens: int
    seconds: float
    #: cores other processes used while this side ran
    others: float
    texts: dict[str, str]

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


@contextmanager
def others_cpu(result: list[float], *own_pids: int) -> Iterator[None]:
    """Measure the cores used meanwhile by processes other than this one and ``own_pids``."""
    pids = [os.getpid(), *own_pids]

    def own() -> float:
        return sum(_cpu(pid) for pid in pids)

    busy0, own0, t0 = busy_cpu_seconds(), own(), time.monotonic()
    yield
    wall = time.monotonic() - t0
    result.append(max(0.0, (busy_cpu_seconds() - busy0 - (own() - own0)) / wall))


def _cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its threads (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def messages(i: int) -> Any:
    return [{"role": "user", "content": prompt(i)}]


# -- 1. the plain loop ----------------------------------------------------------------


def run_loop(rows: int, args: argparse.Namespace) -> Side:
    import llama_cpp

    plain_cpu_buffers()
    llm = llama_cpp.Llama(
        model_path=str(gguf_path()),
        n_ctx=CONTEXT,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    llm.create_chat_completion(messages(0), max_tokens=4, temperature=0.0)  # warm-up
    wait_until_quiet(patience=args.patience)
    texts: dict[str, str] = {}
    tokens = 0
    others: list[float] = []
    with others_cpu(others):
        t0 = time.perf_counter()
        for i in range(rows):
            out: Any = llm.create_chat_completion(
                messages(i), max_tokens=args.max_tokens, temperature=0.0
            )
            texts[f"row-{i}"] = out["choices"][0]["message"]["content"]
            tokens += out["usage"]["completion_tokens"]
        seconds = time.perf_counter() - t0
    llm.close()
    return Side("plain llama-cpp-python loop", rows, tokens, seconds, others[0], texts)


# -- 2. llama-cpp-python's server ---------------------------------------------------------

#: llama_cpp.server's entry point, with the weights in plain CPU buffers
SERVER_MAIN = (
    "import runpy, sys; sys.path.insert(0, {bench!r}); "
    "from _common import plain_cpu_buffers; plain_cpu_buffers(); "
    "sys.argv[0] = 'llama_cpp.server'; runpy.run_module('llama_cpp.server', run_name='__main__')"
)


def run_llama_server(rows: int, args: argparse.Namespace, log: Path) -> Side:
    port = free_port()
    command = [
        PYTHON, "-c", SERVER_MAIN.format(bench=str(Path(__file__).parent)),
        "--model", str(gguf_path()), "--n_ctx", str(CONTEXT),
        "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not start")
            time.sleep(0.2)
        clients = [httpx.Client(base_url=url, timeout=600) for _ in range(args.clients)]

        def post(client: httpx.Client, i: int, max_tokens: int) -> tuple[str, int]:
            # the server's own default repeat_penalty is 1.1; the other sides apply none
            body = {
                "messages": messages(i),
                "max_tokens": max_tokens,
                "temperature": 0,
                "repeat_penalty": 1.0,
            }
            response = client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            data = response.json()
            return data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"]

        post(clients[0], 0, 4)  # warm-up
        wait_until_quiet(patience=args.patience)
        pending = list(range(rows))
        texts: dict[str, str] = {}
        counts: list[int] = []

        def client_loop(client: httpx.Client) -> None:
            while pending:
                i = pending.pop(0)
                text, count = post(client, i, args.max_tokens)
                texts[f"row-{i}"] = text
                counts.append(count)

        others: list[float] = []
        with others_cpu(others, proc.pid), ThreadPoolExecutor(args.clients) as pool:
            t0 = time.perf_counter()
            list(pool.map(client_loop, clients))
            seconds = time.perf_counter() - t0
        for client in clients:
            client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    name = f"llama_cpp.server, {args.clients} concurrent clients"
    return Side(name, rows, sum(counts), seconds, others[0], texts)


# -- 3. inferq's batch API, and time to first token --------------------------------------


def models_file(path: Path, slots: int, options: list[str]) -> Path:
    """inferq's models file: the default model with ``slots`` and the ``--option`` lines."""
    lines = [f'[models."{MODEL}"]', 'engine = "llamacpp"', f"context_length = {CONTEXT}"]
    lines += [f"slots = {slots}", *(item.replace("=", " = ", 1) for item in options)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_inferq_batch(
    client: httpx.Client, server: Server, tmp: Path, rows: int, args: argparse.Namespace
) -> Side:
    source = tmp / f"input-{rows}.jsonl"
    write_input(source, rows, args.max_tokens)
    wait_until_quiet(patience=args.patience)
    others: list[float] = []
    with others_cpu(others, server.pid):
        t0 = time.perf_counter()
        record = upload_file(client, source)
        batch = create_batch(client, record["id"])
        batch = wait_batch(client, batch["id"])
        if batch["status"] != "completed" or not batch["output_file_id"]:
            raise RuntimeError(f"the batch ended {batch['status']}: {batch}")
        output = tmp / f"output-{rows}.jsonl"
        download_file(client, batch["output_file_id"], output)
        seconds = time.perf_counter() - t0
    answers = read_output(output)
    tokens = sum(a.completion_tokens for a in answers.values())
    texts = {cid: a.text for cid, a in answers.items()}
    settings = "".join(f", {item}" for item in args.option)
    name = f"inferq batch API, {args.slots} slots{settings} (upload to download)"
    return Side(name, len(answers), tokens, seconds, others[0], texts)


def first_token_ms(client: httpx.Client, k: int) -> float:
    """Milliseconds from sending a sync streaming chat request to its first text."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROBE.format(label=str(k)[::-1])}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
    }
    t0 = time.perf_counter()
    first = float("nan")
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first != first and line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    first = (time.perf_counter() - t0) * 1e3
    return first


def measure_ttft(
    client: httpx.Client, tmp: Path, args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    """First-token times idle, then while a batch fills every slot."""
    first_token_ms(client, 999)  # warm-up
    idle = []
    for k in range(args.probes):
        idle.append(first_token_ms(client, 1000 + k))
        time.sleep(0.2)
    # enough rows to keep the slots full while the probes run
    source = tmp / "saturate.jsonl"
    write_input(source, max(4 * args.slots, 200), args.max_tokens)
    record = upload_file(client, source)
    batch = create_batch(client, record["id"])
    while client.get(f"/v1/batches/{batch['id']}").json()["status"] != "in_progress":
        time.sleep(0.2)
    time.sleep(3.0)  # every slot busy with rows
    busy = []
    for k in range(args.probes):
        busy.append(first_token_ms(client, 2000 + k))
        time.sleep(0.5)
    client.post(f"/v1/batches/{batch['id']}/cancel").raise_for_status()
    return idle, busy


# -- 4. the engine's limit ------------------------------------------------------------------


def run_engine(rows: int, args: argparse.Namespace, slots: int, **options: Any) -> Side:
    from inferq.core.work import ChatMessage, ChatRequest
    from inferq.engines.base import AbortSignal, ModelSpec
    from inferq.engines.llamacpp import LlamaCppEngine

    spec = ModelSpec(
        name=MODEL, engine="llamacpp", context_length=CONTEXT, slots=slots, options=options
    )

    def request(i: int, max_tokens: int) -> ChatRequest:
        return ChatRequest(
            messages=(ChatMessage("user", prompt(i)),), max_tokens=max_tokens, temperature=0.0
        )

    async def run() -> tuple[float, list[Any]]:
        engine = LlamaCppEngine(spec)
        await engine.start()
        try:
            await engine.generate(request(0, 4), abort=AbortSignal())  # warm-up
            wait_until_quiet(patience=args.patience)
            t0 = time.perf_counter()
            results = await asyncio.gather(
                *(
                    engine.generate(request(i, args.max_tokens), abort=AbortSignal())
                    for i in range(rows)
                )
            )
            return time.perf_counter() - t0, results
        finally:
            await engine.close()

    others: list[float] = []
    with others_cpu(others):
        seconds, results = asyncio.run(run())
    texts = {f"row-{i}": r.text for i, r in enumerate(results)}
    tokens = sum(r.usage.completion_tokens for r in results)
    settings = ", ".join(f"{k} {v}" for k, v in options.items())
    name = f"engine limit, {slots} slots{', ' + settings if settings else ''} (no queue)"
    return Side(name, rows, tokens, seconds, others[0], texts)


# -- the report -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--slots", type=int, default=8, help="inferq's (the default model's)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument(
        "--sides", default="loop,server,inferq,limit", help="which sides to run, in order"
    )
    parser.add_argument(
        "--limit-slots", type=int, default=None, help="the limit's slots (default: --slots)"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an engine option of inferq's model, as TOML (flash_attention=false, ...)",
    )
    parser.add_argument(
        "--limit-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an engine option of the limit's (flash_attention=true, unified_kv=true, ...)",
    )
    parser.add_argument("--patience", type=float, default=120.0)
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--force-doc", action="store_true")
    args = parser.parse_args()
    sides = args.sides.split(",")
    args.limit_slots = args.limit_slots or args.slots
    limit_options: dict[str, Any] = {}
    for item in args.limit_option:
        key, _, value = item.partition("=")
        limit_options[key] = {"true": True, "false": False}.get(value.lower(), value)
    info = machine()
    print(machine_line(info), flush=True)
    load0 = os.getloadavg()
    done: dict[str, Side] = {}
    ttft: tuple[list[float], list[float]] | None = None

    def report(side: Side) -> None:
        print(
            f"{side.name}: {side.rows} rows, {side.tokens} tokens in {side.seconds:.1f} s = "
            f"{side.rate:.1f} tokens/s (others {side.others:.2f} cores)",
            flush=True,
        )

    runners: dict[str, Callable[[Path], Side]] = {
        "loop": lambda tmp: run_loop(args.rows, args),
        "server": lambda tmp: run_llama_server(args.rows, args, tmp / "llama-server.log"),
        "limit": lambda tmp: run_engine(args.rows, args, args.limit_slots, **limit_options),
    }
    with tempfile.TemporaryDirectory(prefix="inferq-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for name in sides:
            if name == "inferq":
                models = models_file(tmp / "models.toml", args.slots, args.option)
                with Server(tmp / "data", models_file=models) as server:
                    key = server.create_key("bench")
                    headers = {"Authorization": f"Bearer {key}"}
                    with httpx.Client(base_url=server.url, headers=headers, timeout=600) as client:
                        done[name] = run_inferq_batch(client, server, tmp, args.rows, args)
                        report(done[name])
                        if args.probes:
                            ttft = measure_ttft(client, tmp, args)
            else:
                done[name] = runners[name](tmp)
                report(done[name])
    load1 = os.getloadavg()
    print_and_record(done, ttft, info, load0, load1, args)


def print_and_record(
    done: dict[str, Side],
    ttft: tuple[list[float], list[float]] | None,
    info: dict[str, str],
    load0: tuple[float, float, float],
    load1: tuple[float, float, float],
    args: argparse.Namespace,
) -> None:
    loop = done.get("loop")
    limit = done.get("limit")
    inferq = done.get("inferq")
    reference = inferq.texts if inferq else {}
    rows = []
    for side in done.values():
        same = sum(1 for cid, text in side.texts.items() if reference.get(cid) == text)
        rows.append([
            side.name, side.rows, side.tokens, f"{side.seconds:.1f}", f"{side.rate:.1f}",
            f"{side.rate / loop.rate:.2f}" if loop else "-",
            f"{side.rate / limit.rate:.2f}" if limit else "-",
            f"{side.others:.2f}", f"{same} of {side.rows}" if reference else "-",
        ])  # fmt: skip
    header = [
        "side", "rows", "output tokens", "seconds", "output tok/s", "vs loop", "vs limit",
        "other CPU (cores)", "texts = inferq's",
    ]  # fmt: skip
    lines = [
        machine_line(info),
        "",
        f"{args.rows} rows (a ~30-word user message each, ~54 prompt tokens with the chat "
        f"template), max_tokens {args.max_tokens}, temperature 0; llama.cpp threads "
        f"{args.threads} on every side; "
        f"SmolLM2-135M Q4_1. Load average {load0[0]:.2f} at the start, {load1[0]:.2f} at "
        "the end; the other CPU column is what other processes used during each side.",
        "",
        table(header, rows),
    ]
    verdicts = []
    if inferq and loop:
        r = inferq.rate / loop.rate
        verdicts.append(
            f"inferq {r:.2f}x the plain loop ({'meets' if r >= 2.2 else 'misses'} 2.2x)"
        )
    if inferq and limit:
        r = inferq.rate / limit.rate
        verdicts.append(
            f"{r * 100:.0f}% of the engine limit ({'meets' if r >= 0.85 else 'misses'} 85%)"
        )
    if ttft is not None:
        idle, busy = ttft
        p50_idle, p50_busy = statistics.median(idle), statistics.median(busy)
        lines += [
            "",
            table(
                ["sync request, time to first token", "p50 ms", "p90 ms", "max ms"],
                [
                    [
                        "idle server",
                        f"{p50_idle:.0f}",
                        f"{percentile(idle, 90):.0f}",
                        f"{max(idle):.0f}",
                    ],
                    [
                        f"every slot busy with batch rows ({args.slots} slots)",
                        f"{p50_busy:.0f}",
                        f"{percentile(busy, 90):.0f}",
                        f"{max(busy):.0f}",
                    ],
                ],
            ),
        ]
        r = p50_busy / p50_idle
        verdicts.append(
            f"time to first token under a saturating batch {r:.2f}x idle "
            f"(p50, {len(busy)} probes; {'meets' if r < 2 else 'misses'} the 2x target)"
        )
    lines += ["", "; ".join(verdicts) + "." if verdicts else ""]
    body = "\n".join(lines)
    print()
    print(body)
    noisy = max((s.others for s in done.values()), default=0.0)
    if args.no_doc:
        return
    if noisy > NOISY and not args.force_doc:
        print(f"not updating the docs: other processes used up to {noisy:.2f} cores")
        return
    update_doc("engine_throughput", body)


if __name__ == "__main__":
    main()
