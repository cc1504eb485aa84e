"""Chat and embeddings served by a node: the server's models file says ``engine =
"remote"``, an ``inferq node --models`` process runs SmolLM2 on llama.cpp, and the
clients (OpenAI's SDK, Infera's wire format, an OpenAI batch) do not see the difference.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
import together

from tests.integration.helpers import new_key, start_server, wait_until
from tests.support.nodes import NodeProc
from tests.support.server import DEFAULT_MODEL, Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EMBED = "smollm2-135m-embed"
SERVER_MODELS = f"""\
[models."{DEFAULT_MODEL}"]
engine = "remote"
context_length = 2048

[models."{EMBED}"]
engine = "remote"
embedding = true
context_length = 512
"""
NODE_MODELS = f"""\
[models."{DEFAULT_MODEL}"]
engine = "llamacpp"
context_length = 2048
slots = 2
threads = 1

[models."{EMBED}"]
engine = "llamacpp"
embedding = true
context_length = 512
slots = 1
threads = 1
"""
MESSAGES = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("node-chat")
    srv = start_server(root, models=SERVER_MODELS)
    node_models = root / "node-models.toml"
    node_models.write_text(NODE_MODELS)
    name = f"llama-{uuid.uuid4().hex[:6]}"
    token = srv.cli("nodes", "create", "--name", name).strip().splitlines()[-1]
    node = NodeProc(srv, token, name, "--models", str(node_models), log=root / "events")
    try:
        node.wait_connected()  # a sync request for its models is refused until then
        yield srv
    finally:
        node.stop()
        srv.stop()


@pytest.fixture(scope="module")
def oai(server: Server) -> Iterator[openai.OpenAI]:
    key = new_key(server, "alice")
    with openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0) as client:
        yield client


def test_sync_and_streamed_chat_through_a_node(oai: openai.OpenAI) -> None:
    sync = oai.chat.completions.create(
        model=DEFAULT_MODEL, messages=MESSAGES, max_tokens=12, temperature=0, timeout=120
    )
    assert sync.choices[0].message.content
    assert sync.usage is not None and sync.usage.completion_tokens > 0
    pieces = [
        chunk.choices[0].delta.content
        for chunk in oai.chat.completions.create(
            model=DEFAULT_MODEL, messages=MESSAGES, max_tokens=12, temperature=0, stream=True
        )
        if chunk.choices and chunk.choices[0].delta.content
    ]
    # relayed as generated: piece by piece, not the whole text at the end
    assert len(pieces) > 1
    assert "".join(pieces) == sync.choices[0].message.content


def test_embeddings_through_a_node(oai: openai.OpenAI) -> None:
    answer = oai.embeddings.create(model=EMBED, input=["red", "green"])
    assert len(answer.data) == 2
    assert len(answer.data[0].embedding) > 100


def test_infera_chat_completions_through_a_node(server: Server) -> None:
    key = new_key(server, "bob")
    body = {"model": DEFAULT_MODEL, "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    answer = httpx.post(
        f"{server.url}/chat/completions", json=body, headers={"api_key": key}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]


def test_a_batch_through_a_node(oai: openai.OpenAI) -> None:
    lines = [
        {
            "custom_id": f"row-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": DEFAULT_MODEL, "messages": MESSAGES, "max_tokens": 4},
        }
        for i in range(3)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = oai.files.create(file=("rows.jsonl", io.BytesIO(data)), purpose="batch")
    batch = oai.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_until(
        lambda: b if (b := oai.batches.retrieve(batch.id)).status == "completed" else None,
        what="the batch to complete",
    )
    assert done.request_counts is not None and done.request_counts.completed == 3
    assert done.output_file_id is not None
    out = oai.files.content(done.output_file_id).text.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in out) == ["row-0", "row-1", "row-2"]


def test_nodes_list_shows_the_node_and_its_models(server: Server) -> None:
    listed = server.cli("nodes", "list")
    assert DEFAULT_MODEL in listed and EMBED in listed


# -- preemption -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A remote chat model whose node runs the fake engine slowly, one job at a time."""
    root = tmp_path_factory.mktemp("node-preempt")
    srv = start_server(root, models='[models.slow]\nengine = "remote"\ncontext_length = 512\n')
    node_models = root / "node-models.toml"
    node_models.write_text(
        '[models.slow]\nengine = "fake"\ncontext_length = 512\nslots = 1\ntoken_delay = 0.05\n'
    )
    token = srv.cli("nodes", "create", "--name", "slow").strip().splitlines()[-1]
    node = NodeProc(srv, token, "slow", "--models", str(node_models), log=root / "events")
    try:
        yield srv
    finally:
        node.stop()
        srv.stop()


def test_a_sync_request_preempts_a_queued_job_running_on_a_full_node(
    slow_server: Server,
) -> None:
    key = new_key(slow_server, "dave")
    long_text = " ".join(["word"] * 150)  # 150 tokens of 0.05 s: 7.5 s
    with together.Together(api_key=key, base_url=slow_server.url, max_retries=0) as tq:
        payload = {"messages": [{"role": "user", "content": long_text}], "max_tokens": 200}
        queued = tq.beta.jig.queue.submit(model="slow", payload=payload).request_id
        wait_until(
            lambda: tq.beta.jig.queue.retrieve(model="slow", request_id=queued).status == "running",
            what="the queued job to run",
        )
        with openai.OpenAI(api_key=key, base_url=slow_server.url + "/v1", max_retries=0) as oai:
            started = time.monotonic()
            answer = oai.chat.completions.create(
                model="slow", messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
            took = time.monotonic() - started
        assert answer.choices[0].message.content == "echo: hi"
        assert took < 4.0  # not after the 7.5 s job: it was preempted
        done = wait_until(
            lambda: (
                s
                if (s := tq.beta.jig.queue.retrieve(model="slow", request_id=queued)).status
                in ("done", "failed")
                else None
            ),
            what="the preempted job to finish",
        )
        assert done.status == "done"
        assert done.retries == 0  # handed back without using up an attempt
