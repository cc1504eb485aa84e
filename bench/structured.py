"""Structured output: what constraining decoding to a JSON schema costs, and whether
every answer holds.

Two parts, in one sitting on one machine:

* **the constraint alone** (no model run): for every token of real constrained
  answers, the time to restrict the next token to what a JSON schema allows and to
  take the sampled one, with llguidance (the token mask inferq applies to llama.cpp's
  logits) and with llama.cpp's own grammar sampler (GBNF from llama-cpp-python's
  ``json_schema_to_gbnf``, applied to the whole vocabulary as a sampler of the chain
  does), on SmolLM2's 49,152-token vocabulary. Also each one's grammar build time.
* **a batch end to end**: one ``inferq serve`` (SmolLM2-135M, 8 slots), the same
  ``--rows`` rows (200) through OpenAI's batch API with a JSON schema
  (``response_format`` ``json_schema``) and without, alternated ``--rounds`` times.
  Output tokens/s (completion tokens of all rows over the wall time from create to
  ended) and the share of constrained answers that parse and validate against the
  schema (jsonschema). The rows sample at temperature 0.7 with a seed each.

    .venv/bin/python bench/structured.py [--rows 200] [--rounds 2] [--no-doc]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import llama_cpp
import numpy as np
from llama_cpp.llama_grammar import json_schema_to_gbnf

from _common import (
    Server,
    cpu_seconds,
    create_batch,
    machine,
    machine_line,
    table,
    update_doc,
    upload_file,
    wait_batch,
)
from inferq.core.structured import OutputFormat
from inferq.core.work import ChatRequest
from inferq.engines.base import ModelSpec
from inferq.engines.llama_structured import Constraint, Tokenizer, grammar_for
from inferq.engines.llamacpp import default_model_path, load_model

MODEL = "smollm2-135m-instruct"
MODELS = f"""\
[models."{MODEL}"]
engine = "llamacpp"
slots = 8
context_length = 1024
"""
#: max_tokens of the rows that are timed: most schema answers end before it, free text not
MAX_TOKENS = 96
#: max_tokens of the validity batch: room for the longest document the schema allows
#: (180 characters of strings, each at worst a token, and the JSON around them)
ROOM = 320
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "maxLength": 40},
        "summary": {"type": "string", "maxLength": 80},
        "difficulty": {"type": "integer", "minimum": 1, "maximum": 5},
        "keywords": {
            "type": "array",
            "items": {"type": "string", "maxLength": 20},
            "maxItems": 3,
        },
        "for_children": {"type": "boolean"},
    },
    "required": ["topic", "summary", "difficulty", "keywords", "for_children"],
    "additionalProperties": False,
}
TOPICS = [
    "photosynthesis", "a hash table", "compound interest", "the water cycle",
    "public key cryptography", "vaccines", "plate tectonics", "binary search",
    "supply and demand", "the greenhouse effect", "recursion", "inflation",
    "bread rising", "the immune system", "an electric motor", "the tides",
    "a database index", "black holes", "caching", "composting",
]  # fmt: skip


def row(i: int, constrained: bool, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    topic = TOPICS[i % len(TOPICS)]
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Describe {topic} as a short record."}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": i,
    }
    if constrained:
        spec = {"name": "record", "schema": SCHEMA, "strict": True}
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    return {"custom_id": f"row-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}


def run_batch(
    client: httpx.Client,
    work: Path,
    rows: int,
    constrained: bool,
    max_tokens: int = MAX_TOKENS,
    *,
    pid: int,
) -> dict[str, Any]:
    path = work / f"{'schema' if constrained else 'free'}-{time.monotonic_ns()}.jsonl"
    lines = (json.dumps(row(i, constrained, max_tokens)) + "\n" for i in range(rows))
    path.write_text("".join(lines))
    uploaded = upload_file(client, path)
    t0, cpu0 = time.perf_counter(), cpu_seconds(pid)
    batch = create_batch(client, uploaded["id"])
    done = wait_batch(client, batch["id"], interval=0.2)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    assert done["status"] == "completed", done
    content = client.get(f"/v1/files/{done['output_file_id']}/content").text
    answers = [json.loads(line)["response"]["body"] for line in content.splitlines()]
    tokens = sum(a["usage"]["completion_tokens"] for a in answers)
    valid = 0
    texts = []
    cut = 0
    for answer in answers:
        text = answer["choices"][0]["message"]["content"]
        texts.append(text)
        cut += answer["choices"][0]["finish_reason"] == "length"
        try:
            jsonschema.validate(json.loads(text), SCHEMA)
            valid += 1
        except (ValueError, jsonschema.ValidationError):
            pass
    return {
        "constrained": constrained,
        "seconds": seconds,
        "cpu": cpu,
        "tokens": tokens,
        "rows": len(answers),
        "valid": valid,
        "cut": cut,
        "texts": texts,
    }


class GbnfSampler:
    """llama.cpp's grammar sampler alone, on a candidate array of the whole vocabulary."""

    def __init__(self, vocab: Any, n_vocab: int, gbnf: str) -> None:
        self.sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if not self.sampler:
            raise RuntimeError("llama.cpp refused the grammar")
        self.array = (llama_cpp.llama_token_data * n_vocab)()
        self.view = np.ctypeslib.as_array(self.array)
        self.view["id"] = np.arange(n_vocab)
        self.n_vocab = n_vocab

    def step(self, logits: np.ndarray[Any, Any], token: int) -> float:
        """Seconds to filter the candidates and accept ``token`` (the fill not counted)."""
        self.view["logit"] = logits
        self.view["p"] = 0.0
        data = ctypes.cast(self.array, ctypes.POINTER(llama_cpp.llama_token_data))
        candidates = llama_cpp.llama_token_data_array(
            data=data, size=self.n_vocab, selected=-1, sorted=False
        )
        t0 = time.perf_counter()
        llama_cpp.llama_sampler_apply(self.sampler, ctypes.byref(candidates))
        llama_cpp.llama_sampler_accept(self.sampler, token)
        seconds = time.perf_counter() - t0
        assert self.view["logit"][token] > -np.inf, "the grammar refused a valid token"
        return seconds

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self.sampler)


def constraint_costs(texts: list[str]) -> dict[str, float]:
    """Per-token and build times of both constraints on the tokens of ``texts``."""
    model = load_model(llama_cpp, ModelSpec(name=MODEL, engine="llamacpp"), default_model_path())
    vocab = model.vocab
    n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
    tokenizer = Tokenizer(llama_cpp, vocab)
    t0 = time.perf_counter()
    tokenizer.get()
    tokenizer_s = time.perf_counter() - t0
    fmt = OutputFormat("json_schema", SCHEMA, "record")
    grammar = grammar_for(ChatRequest(messages=(), response_format=fmt))
    assert grammar is not None
    gbnf = json_schema_to_gbnf(json.dumps(SCHEMA))
    rng = np.random.default_rng(0)
    ll_s: list[float] = []
    gbnf_s: list[float] = []
    ll_build: list[float] = []
    gbnf_build: list[float] = []
    for text in texts:
        tokens = model.tokenize(text.encode(), add_bos=False, special=False)
        t0 = time.perf_counter()
        constraint = Constraint(tokenizer, grammar)
        ll_build.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sampler = GbnfSampler(vocab, n_vocab, gbnf)
        gbnf_build.append(time.perf_counter() - t0)
        for token in tokens:
            logits = rng.standard_normal(n_vocab).astype(np.float32)
            gbnf_s.append(sampler.step(logits, token))
            t0 = time.perf_counter()
            constraint.mask(logits)
            ok = constraint.accept(token)
            ll_s.append(time.perf_counter() - t0)
            assert ok and logits[token] > -np.inf
        sampler.close()
    model.close()
    return {
        "tokens": len(ll_s),
        "ll_us": statistics.mean(ll_s) * 1e6,
        "ll_p99_us": float(np.percentile(ll_s, 99)) * 1e6,
        "gbnf_us": statistics.mean(gbnf_s) * 1e6,
        "gbnf_p99_us": float(np.percentile(gbnf_s, 99)) * 1e6,
        "ll_build_ms": statistics.median(ll_build) * 1e3,
        "gbnf_build_ms": statistics.median(gbnf_build) * 1e3,
        "tokenizer_s": tokenizer_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    parser.add_argument("--no-room", action="store_true", help="skip the validity batch")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    info = machine()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = work / "models.toml"
        models.write_text(MODELS)
        with Server(work / "data", models_file=models, log_level="warning") as server:
            key = server.create_key("bench")
            headers = {"authorization": f"Bearer {key}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
                pid = server.pid
                # warm-up: the grammar tokenizer, the prefix cache
                run_batch(client, work, 8, True, pid=pid)
                for n in range(args.rounds):
                    for constrained in (n % 2 == 0, n % 2 != 0):
                        result = run_batch(
                            client, work, args.rows, constrained, args.max_tokens, pid=pid
                        )
                        runs.append(result)
                        show(f"round {n + 1}", result)
                room = None
                if not args.no_room:
                    room = run_batch(client, work, args.rows, True, ROOM, pid=pid)
                    show(f"max_tokens {ROOM}", room)
    texts = [t for r in runs if r["constrained"] for t in r["texts"]][:40]
    costs = constraint_costs(texts)
    print(json.dumps(costs, indent=1))
    report(runs, room, costs, info, args)


def show(label: str, result: dict[str, Any]) -> None:
    rate = result["tokens"] / result["seconds"]
    print(
        f"{label} {'schema' if result['constrained'] else 'free  '}: "
        f"{result['tokens']} tokens in {result['seconds']:.1f} s = {rate:.1f} tokens/s "
        f"({result['tokens'] / result['cpu']:.1f} per CPU-second), "
        f"valid {result['valid']}/{result['rows']}, cut by max_tokens {result['cut']}"
    )


def report(
    runs: list[dict[str, Any]],
    room: dict[str, Any] | None,
    costs: dict[str, float],
    info: dict[str, str],
    args: Any,
) -> None:
    rows = []
    ratios = []
    for n in range(args.rounds):
        pair = runs[2 * n : 2 * n + 2]
        free = next(r for r in pair if not r["constrained"])
        schema = next(r for r in pair if r["constrained"])
        free_rate = free["tokens"] / free["seconds"]
        schema_rate = schema["tokens"] / schema["seconds"]
        free_cpu = free["tokens"] / free["cpu"]
        schema_cpu = schema["tokens"] / schema["cpu"]
        ratios.append(schema_cpu / free_cpu)
        rows.append(
            [
                n + 1,
                f"{free_rate:.1f} ({free_cpu:.1f})",
                f"{schema_rate:.1f} ({schema_cpu:.1f})",
                f"{schema_rate / free_rate:.2f}x ({schema_cpu / free_cpu:.2f}x)",
                f"{schema['valid']}/{schema['rows']} ({schema['cut']} cut)",
                f"{free['valid']}/{free['rows']}",
            ]
        )
    if room is not None:
        valid, total, cut = room["valid"], room["rows"], room["cut"]
        validity = (
            f"With max_tokens {ROOM} (room for the longest document the schema allows), "
            f"{valid} of {total} constrained answers parse and validate "
            f"({100 * valid / total:.0f}%, target 100%; {cut} cut by max_tokens)."
        )
    else:
        validity = ""
    body = "\n\n".join(
        [
            f"`bench/structured.py --rows {args.rows} --rounds {args.rounds} "
            f"--max-tokens {args.max_tokens}`. {machine_line(info)}",
            table(
                [
                    "round",
                    "no schema: tokens/s (per CPU-s)",
                    "schema: tokens/s (per CPU-s)",
                    "ratio (per CPU-s)",
                    "schema: valid (cut by max_tokens)",
                    "no schema: matches it",
                ],
                rows,
            ),
            f"Median ratio of tokens per CPU-second of the server {statistics.median(ratios):.2f}x "
            "(target at least 0.80x). " + validity,
            table(
                ["constraint", "per token (mean)", "per token (p99)", "build per request"],
                [
                    [
                        "llguidance mask + consume (inferq)",
                        f"{costs['ll_us']:.0f} us",
                        f"{costs['ll_p99_us']:.0f} us",
                        f"{costs['ll_build_ms']:.2f} ms",
                    ],
                    [
                        "llama.cpp grammar sampler (GBNF)",
                        f"{costs['gbnf_us']:.0f} us",
                        f"{costs['gbnf_p99_us']:.0f} us",
                        f"{costs['gbnf_build_ms']:.2f} ms",
                    ],
                ],
            ),
            f"Over {costs['tokens']:.0f} tokens of constrained answers, vocabulary 49,152; "
            f"llguidance's view of the vocabulary is built once per model "
            f"({costs['tokenizer_s']:.2f} s).",
        ]
    )
    print(body)
    if not args.no_doc:
        update_doc("structured", body)


if __name__ == "__main__":
    main()
