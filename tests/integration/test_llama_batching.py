"""Continuous batching in the embedded llama.cpp engine, through a real server.

The server runs the real model with two slots, both decoded together in one batch.
Batch rows fill the slots; a sync chat request takes one of them at once (the least
urgent row is preempted and requeued) and the batch still ends with every row once.
Greedy text is the same whether requests run one at a time or batched together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.helpers import LONG_PROMPT, MODEL, new_key, start_server, wait_until
from tests.support.server import Server

pytestmark = pytest.mark.integration

SLOTS = 2
BATCHED_MODELS = f"""\
[models."{MODEL}"]
engine = "llamacpp"
slots = {SLOTS}
context_length = 1024
threads = 1
"""
#: long enough that no row can end while the test looks (SmolLM2 writes on and on)
ROW_TOKENS = 400
ROWS = SLOTS + 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("batching"), models=BATCHED_MODELS)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def oai(server: Server) -> Iterator[openai.OpenAI]:
    key = new_key(server, "batcher")
    with openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0) as client:
        yield client


def row(custom_id: str) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": LONG_PROMPT}],
        "max_tokens": ROW_TOKENS,
        "temperature": 0,
    }
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def running_jobs(server: Server) -> list[str]:
    """The ids of the jobs the server has started, in order, from its log."""
    return re.findall(r"job (\S+) running \(attempt", server.log())


@pytest.mark.slow
def test_a_sync_request_cuts_into_a_full_batch_which_still_runs_every_row_once(
    server: Server, oai: openai.OpenAI, tmp_path: Path
) -> None:
    lines = b"".join(json.dumps(row(f"row-{i}")).encode() + b"\n" for i in range(ROWS))
    uploaded = oai.files.create(file=("rows.jsonl", lines), purpose="batch")
    # counted before the batch exists: its rows may start as soon as it is created
    started = len(running_jobs(server))
    batch = oai.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    # every slot busy with a row, one more row waiting
    wait_until(lambda: len(running_jobs(server)) >= started + SLOTS, what="the rows to start")

    first_piece_at: int | None = None
    pieces: list[str] = []
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    sync_id = ""
    for chunk in stream:
        sync_id = chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            if first_piece_at is None:
                counts = oai.batches.retrieve(batch.id).request_counts
                assert counts is not None
                first_piece_at = counts.completed
            pieces.append(chunk.choices[0].delta.content)
    # it started at once: no row (each hundreds of decode steps long) had ended yet
    assert pieces and first_piece_at == 0
    # by taking a row's slot: that row was stopped and handed back to the queue
    job_id = sync_id.removeprefix("chatcmpl-")
    log = server.log()
    preempted = re.findall(rf"job (\S+) preempted by {re.escape(job_id)}", log)
    assert len(preempted) == 1
    assert f"job {preempted[0]} handed back to the queue" in log

    def ended() -> Any:
        current = oai.batches.retrieve(batch.id)
        return current if current.status in {"completed", "failed", "cancelled"} else None

    done = wait_until(ended, interval=0.5, what="the batch to end")
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (ROWS, 0)
    assert done.output_file_id is not None
    results = [json.loads(x) for x in oai.files.content(done.output_file_id).text.splitlines()]
    # every row exactly once, the preempted one included, each whole: the same prompt
    # at temperature 0 gives the same text, so a row run twice or cut short would show
    assert sorted(r["custom_id"] for r in results) == [f"row-{i}" for i in range(ROWS)]
    bodies = [r["response"]["body"] for r in results]
    assert all(r["response"]["status_code"] == 200 for r in results)
    assert all(b["usage"]["completion_tokens"] == ROW_TOKENS for b in bodies)
    texts = {b["choices"][0]["message"]["content"] for b in bodies}
    assert len(texts) == 1
    # the preempted row ran again from the start: the server started it twice
    assert running_jobs(server).count(preempted[0]) == 2


PROMPTS = (
    "What is the capital of France?",
    "Give me three tips for writing clear emails.",
    "Write a haiku about autumn leaves.",
    "Explain what a hash table is, in two sentences.",
    "Why is the sky blue? Answer for a child.",
)


def test_batched_greedy_text_equals_one_at_a_time(oai: openai.OpenAI) -> None:
    def complete(prompt: str) -> tuple[str, int, int, int]:
        response = oai.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "You are a helpful assistant. Be brief."},
                {"role": "user", "content": prompt},
            ],
            max_tokens=32,
            temperature=0,
        )
        usage = response.usage
        assert usage is not None
        content = response.choices[0].message.content
        assert content and usage.prompt_tokens_details is not None
        cached = usage.prompt_tokens_details.cached_tokens or 0
        return content, usage.prompt_tokens, usage.completion_tokens, cached

    alone = [complete(p) for p in PROMPTS]
    # more requests than slots: they decode two at a time, the others joining as
    # slots free, and each gets what it got alone
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(complete, PROMPTS))
    assert [t[:3] for t in together] == [a[:3] for a in alone]
    assert len({a[0] for a in alone}) == len(PROMPTS)
    # one after another, each prompt found the shared system prompt in the KV cache
    # of the one before, and the tokens it did not evaluate again are reported as cached
    assert all(0 < cached < prompt for _, prompt, _, cached in alone[1:])
