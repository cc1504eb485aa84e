"""Sync requests for models that only nodes run, while no node serving them is connected.

A client waiting on its connection for a model no connected node serves is answered at
once: 503 with ``Retry-After`` in its dialect's shape (Anthropic's 529), and nothing is
stored; work that is collected later (a queue submit, a background response) is still
accepted and runs once a node connects. On PostgreSQL the node connects to another API
server than the one the client talks to: the nodes' records in the store are the truth.
The servers' sync timeout is short, so that a request that waited for a node instead
fails in seconds, not minutes.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import together

from tests.acceptance.cluster import schema_url
from tests.integration.helpers import new_key, start_server, wait_until
from tests.support.nodes import NodeProc
from tests.support.postgres import server_schema
from tests.support.server import Server
from tests.support.server_db import server_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAT, EMBED, LOCAL = "remote-chat", "remote-embed", "local-chat"
SERVER_MODELS = f"""\
[models."{CHAT}"]
engine = "remote"
context_length = 512

[models."{EMBED}"]
engine = "remote"
embedding = true
context_length = 512

[models."{LOCAL}"]
engine = "fake"
context_length = 512
slots = 1
"""
NODE_MODELS = f"""\
[models."{CHAT}"]
engine = "fake"
context_length = 512
slots = 2

[models."{EMBED}"]
engine = "fake"
embedding = true
context_length = 512
slots = 1
"""
#: what a request that waited for a node would take before its 408
SYNC_TIMEOUT = 10
#: an answer "at once": far below SYNC_TIMEOUT, with room for a loaded machine
AT_ONCE = 5.0
#: how long another API server may go on answering from the nodes it read before a node
#: connected (core.nodes.ROSTER_SECONDS), with a margin
ROSTER_LAG = 1.5
HELLO = [{"role": "user", "content": "hi there"}]


@dataclass
class Cluster:
    #: the server the clients talk to, and the one the node connects to (the same one
    #: on SQLite; two API servers on one PostgreSQL schema)
    front: Server
    back: Server
    schema: str | None

    def jobs(self) -> list[tuple[Any, ...]]:
        """(model, state, service class) of every stored job."""
        [rows] = server_rows(
            self.front.data_dir, self.schema, "SELECT model, state, service_class FROM jobs"
        )
        return rows


@pytest.fixture(params=["sqlite", "postgres"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    env = {"INFERQ_SYNC_TIMEOUT": str(SYNC_TIMEOUT)}
    schemas = server_schema() if request.param == "postgres" else contextlib.nullcontext(None)
    started: list[Server] = []
    with schemas as schema:
        if schema is not None:
            env["INFERQ_DATABASE_URL"] = schema_url(schema)
        try:
            started.append(start_server(tmp_path / "front", models=SERVER_MODELS, env=env))
            if schema is not None:
                started.append(start_server(tmp_path / "back", models=SERVER_MODELS, env=env))
            yield Cluster(started[0], started[-1], schema)
        finally:
            for server in started:
                server.stop()


def start_node(server: Server) -> NodeProc:
    root = server.data_dir.parent
    (root / "node-models.toml").write_text(NODE_MODELS)
    name = f"node-{uuid.uuid4().hex[:6]}"
    token = server.cli("nodes", "create", "--name", name).strip().splitlines()[-1]
    node = NodeProc(server, token, name, "--models", str(root / "node-models.toml"),
                    log=root / "events")  # fmt: skip
    return node.wait_connected()


def refused_at_once(call: Any, status: int = 503) -> Any:
    """The HTTP response of ``call`` (an SDK call that raises APIStatusError, or an httpx
    request): ``status`` with Retry-After, in less than :data:`AT_ONCE` seconds."""
    started = time.monotonic()
    try:
        answer = call()
    except openai.APIStatusError as exc:
        answer = exc.response
    took = time.monotonic() - started
    assert answer.status_code == status, answer.text
    assert took < AT_ONCE, f"answered after {took:.1f} s"
    assert float(answer.headers["retry-after"]) > 0
    return answer


def no_node_message(message: str, model: str = CHAT) -> None:
    assert model in message and "no node" in message, message


def test_a_sync_request_is_refused_at_once_until_a_node_serving_its_model_connects(
    cluster: Cluster,
) -> None:
    front = cluster.front
    key = new_key(front, "alice")
    oai = openai.OpenAI(api_key=key, base_url=front.url + "/v1", max_retries=0)
    http = httpx.Client(base_url=front.url, timeout=SYNC_TIMEOUT + 30)
    with oai, http:
        # OpenAI: chat (plain and streamed), embeddings, a response that is not background
        answer = refused_at_once(
            lambda: oai.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=4)
        )
        error = answer.json()["error"]
        no_node_message(error["message"])
        assert error["type"] == "server_error" and error["param"] == "model"
        refused_at_once(
            lambda: oai.chat.completions.create(
                model=CHAT, messages=HELLO, max_tokens=4, stream=True
            )
        )
        embedded = refused_at_once(lambda: oai.embeddings.create(model=EMBED, input=["red"]))
        no_node_message(embedded.json()["error"]["message"], EMBED)
        refused_at_once(lambda: oai.responses.create(model=CHAT, input="hi"))
        # Anthropic's own status for "cannot take it now" is 529 (its SDK retries it)
        anthropic = refused_at_once(
            lambda: http.post(
                "/v1/messages",
                headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                json={"model": CHAT, "max_tokens": 4, "messages": HELLO},
            ),
            status=529,
        )
        assert anthropic.json()["error"]["type"] == "overloaded_error"
        no_node_message(anthropic.json()["error"]["message"])
        infera = refused_at_once(
            lambda: http.post(
                "/chat/completions",
                headers={"api_key": key},
                json={
                    "model": CHAT,
                    "messages": HELLO,
                    "max_tokens": 4,
                    "temperature": 0,
                    "request_timeout_time": SYNC_TIMEOUT,
                },
            )
        )
        no_node_message(infera.json()["detail"])
        assert cluster.jobs() == []  # nothing was stored

        # work collected later still queues, and waits for a node
        with together.Together(api_key=key, base_url=front.url, max_retries=0) as tq:
            payload = {"messages": HELLO, "max_tokens": 4}
            queued = str(tq.beta.jig.queue.submit(model=CHAT, payload=payload).request_id)
            background = oai.responses.create(model=CHAT, input="later", background=True)
            assert background.status == "queued"
            assert sorted(state for _, state, _ in cluster.jobs()) == ["queued", "queued"]

            node = start_node(cluster.back)
            try:
                time.sleep(ROSTER_LAG)  # another server's read of the nodes is renewed
                started = time.monotonic()
                done = oai.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=4)
                assert done.choices[0].message.content == "echo: hi there"
                assert time.monotonic() - started < SYNC_TIMEOUT
                assert len(oai.embeddings.create(model=EMBED, input=["red"]).data) == 1
                wait_until(
                    lambda: (
                        tq.beta.jig.queue.retrieve(model=CHAT, request_id=queued).status == "done"
                    ),
                    what="the queued job to run on the node",
                )
                wait_until(
                    lambda: oai.responses.retrieve(background.id).status == "completed",
                    what="the background response to run on the node",
                )
            finally:
                node.stop()


def test_a_model_that_runs_in_process_is_never_refused(cluster: Cluster) -> None:
    key = new_key(cluster.front, "bob")
    with openai.OpenAI(api_key=key, base_url=cluster.front.url + "/v1", max_retries=0) as oai:
        done = oai.chat.completions.create(model=LOCAL, messages=HELLO, max_tokens=4)
    assert done.choices[0].message.content == "echo: hi there"
