"""The llama.cpp engine's throughput against its slot count, with no queue and no server.

inferq's ``LlamaCppEngine`` used directly: ``slots = N`` (1, 2, 4, 8, 16, 32 by
default) and ``--rows`` rows of ``batch_throughput``'s batch (~30-token prompts
with the chat template, ``--max-tokens`` 64, temperature 0) handed to it at once,
so the engine keeps N sequences decoding together, new ones joining as others
finish (continuous batching). Output tokens/s = completion tokens over the wall
time from the first call to the last result, after a warm-up request.

Each KV layout is measured with ``--modes``: ``exact`` (the default: a KV stream
per sequence, no flash attention), ``exact-fa`` (a stream per sequence, flash
attention), ``unified-fa`` (one KV buffer, flash attention: not bit-exact). The
modes take turns at each slot count, so a change in the machine's load hits all
of them alike; a run during which other processes used more than 0.25 cores is run
again (twice at most). Prints a table, writes a plot (docs/engine_slots.png, with
matplotlib: ``pip install -e '.[bench]'``) and replaces its section of
docs/benchmarks.md.

    .venv/bin/python bench/engine_limit.py [--sizes 1,2,4,8,16,32] [--rows 64]
        [--modes exact,exact-fa,unified-fa] [--threads auto]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from _common import (
    NOISY,
    ROOT,
    busy_cpu_seconds,
    machine,
    machine_line,
    table,
    update_doc,
    wait_until_quiet,
)
from batch_throughput import prompt
from inferq.core.work import ChatMessage, ChatRequest
from inferq.engines.base import AbortSignal, ModelSpec
from inferq.engines.llamacpp import LlamaCppEngine

CONTEXT = 2048
PLOT = ROOT / "docs" / "engine_slots.png"
#: name -> the engine options it sets; "exact" is the default
MODES: dict[str, dict[str, bool]] = {
    "exact": {"unified_kv": False, "flash_attention": False},
    "exact-fa": {"unified_kv": False, "flash_attention": True},
    "unified-fa": {"unified_kv": True, "flash_attention": True},
    "unified": {"unified_kv": True, "flash_attention": False},
}


def request(i: int, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        messages=(ChatMessage("user", prompt(i)),), max_tokens=max_tokens, temperature=0.0
    )


async def engine_rate(slots: int, mode: str, args: argparse.Namespace) -> tuple[float, float]:
    """Output tokens/s of ``--rows`` rows on ``slots`` slots, and the cores other
    processes used meanwhile."""
    options: dict[str, Any] = {"threads": args.threads, **MODES[mode]}
    spec = ModelSpec(
        name="m", engine="llamacpp", context_length=CONTEXT, slots=slots, options=options
    )
    engine = LlamaCppEngine(spec)
    await engine.start()
    try:
        await engine.generate(request(10_000, 4), abort=AbortSignal())  # warm-up
        own0, busy0 = time.process_time(), busy_cpu_seconds()
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(
                engine.generate(request(i, args.max_tokens), abort=AbortSignal())
                for i in range(args.rows)
            )
        )
        wall = time.perf_counter() - t0
        others = (busy_cpu_seconds() - busy0 - (time.process_time() - own0)) / wall
    finally:
        await engine.close()
    return sum(r.usage.completion_tokens for r in results) / wall, max(0.0, others)


def plot(sizes: list[int], rates: dict[str, list[float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for mode, values in rates.items():
        ax.plot(sizes, values, marker="o", label=mode)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("slots (sequences decoded together)")
    ax.set_ylabel("output tokens/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(PLOT)
    print(f"wrote {PLOT.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2,4,8,16,32")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", default="auto", help="a number, or auto (the default)")
    parser.add_argument("--modes", default="exact,exact-fa,unified-fa")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--force-doc", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    info = machine()
    print(machine_line(info), flush=True)
    load0 = os.getloadavg()[0]
    wait_until_quiet(patience=120)
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    others: list[float] = []
    for n in sizes:
        for mode in modes:
            rate, busy = asyncio.run(engine_rate(n, mode, args))
            for _ in range(2):  # a run that other work disturbed is run again
                if busy <= NOISY:
                    break
                print(f"slots {n} {mode}: {rate:.1f} tokens/s with others at {busy:.2f} cores")
                wait_until_quiet(patience=120)
                rate, busy = asyncio.run(engine_rate(n, mode, args))
            rates[mode].append(rate)
            others.append(busy)
            print(f"slots {n:>2} {mode}: {rate:.1f} tokens/s (others {busy:.2f} cores)", flush=True)
    load1 = os.getloadavg()[0]
    header = ["slots", *(f"{mode} tok/s" for mode in modes), f"{modes[0]} vs 1 slot"]
    rows: list[list[object]] = []
    for k, n in enumerate(sizes):
        first = rates[modes[0]]
        rows.append([n, *(f"{rates[m][k]:.1f}" for m in modes), f"{first[k] / first[0]:.2f}x"])
    best_mode, best_k = max(
        ((m, k) for m in modes for k in range(len(sizes))), key=lambda mk: rates[mk[0]][mk[1]]
    )
    setup = (
        f"SmolLM2-135M Q4_1, {args.rows} rows at once per run, max_tokens {args.max_tokens}, "
        f"greedy; threads {args.threads}; context {CONTEXT} per slot."
    )
    body = "\n".join([
        machine_line(info),
        "",
        f"{setup} Other processes used {min(others):.2f} to {max(others):.2f} cores during "
        f"the runs (load average {load0:.2f} at the start, {load1:.2f} at the end).",
        "",
        table(header, rows),
        "",
        f"Best: {rates[best_mode][best_k]:.1f} output tokens/s with {sizes[best_k]} slots, "
        f"{best_mode}.",
        "",
        f"![output tokens/s against slots]({PLOT.name})",
    ])  # fmt: skip
    print()
    print(body)
    if args.no_doc:
        return
    title = (
        f"inferq's llama.cpp engine, SmolLM2-135M Q4_1, {info['cores']} cores ({info['cpu']})\n"
        f"{args.rows} rows at once, max_tokens {args.max_tokens}, greedy, threads {args.threads}"
    )
    plot(sizes, rates, title)
    if max(others) > NOISY and not args.force_doc:
        print(f"not updating the docs: other processes used up to {max(others):.2f} cores")
        return
    update_doc("engine_limit", body)


if __name__ == "__main__":
    main()
