"""Redundant execution: a model with ``replicas = 3`` runs each job on three distinct
nodes and returns the majority answer. Two ``inferq node`` processes answer alike (the
fake engine); the third node, an Infera-style one spoken by this test, answers something
else: the majority wins, and the disagreement is recorded on the job and the node."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import together

from tests.integration.helpers import new_key, start_server
from tests.support.nodes import NodeProc, wait_for
from tests.support.server import Server

pytestmark = pytest.mark.integration

MODEL = "voted"
SERVER_MODELS = f"""\
[models.agree]
engine = "fake"
embedding = true
dimensions = 64
context_length = 512

[models.{MODEL}]
engine = "remote"
context_length = 512
replicas = 3
agree_model = "agree"
"""
NODE_MODELS = f'[models.{MODEL}]\nengine = "fake"\ncontext_length = 512\nslots = 1\n'


def token_of(server: Server, name: str) -> str:
    return server.cli("nodes", "create", "--name", name).strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("replicas")
    srv = start_server(root, models=SERVER_MODELS)
    (root / "node.toml").write_text(NODE_MODELS)
    procs = [
        NodeProc(srv, token_of(srv, f"alike-{i}"), f"alike-{i}", "--models",
                 str(root / "node.toml"), log=root / "events")
        for i in range(2)
    ]  # fmt: skip
    try:
        yield srv
    finally:
        for proc in procs:
            proc.stop()
        srv.stop()


def test_the_majority_answer_wins_and_the_disagreement_is_recorded(
    server: Server, tmp_path: Path
) -> None:
    odd = f"odd-{uuid.uuid4().hex[:4]}"
    with httpx.Client(
        base_url=server.url, headers={"api_key": token_of(server, odd)}, timeout=30
    ) as node:
        assert node.post("/worker/update_models", json={"models": [MODEL]}).status_code == 200
        with together.Together(
            api_key=new_key(server, "erin"), base_url=server.url, max_retries=0
        ) as tq:
            payload = {"messages": [{"role": "user", "content": "two plus two"}], "max_tokens": 8}
            request_id = str(tq.beta.jig.queue.submit(model=MODEL, payload=payload).request_id)
            job: dict[str, Any] = wait_for(
                "a replica for the odd node",
                lambda: j if (j := node.get("/worker/get_job").json())["job_id"] else None,
            )
            assert job["model"] == MODEL and job["messages"] == payload["messages"]
            assert node.get("/worker/get_job").json() == {"job_id": None}  # one per node
            result = {
                "message": {"role": "assistant", "content": "five, surely"},
                "done_reason": "stop",
                "prompt_eval_count": 3,
                "eval_count": 2,
            }
            body = {"job_id": job["job_id"], "api_key": "", "model_name": MODEL}
            posted = node.post(
                "/worker/update_result", json={**body, "result": result, "status": "completed"}
            )
            assert posted.status_code == 200, posted.text
            status = wait_for(
                "the replicated job to end",
                lambda: (
                    s
                    if (s := tq.beta.jig.queue.retrieve(model=MODEL, request_id=request_id)).status
                    in ("done", "failed")
                    else None
                ),
            )
    assert status.status == "done", status
    assert status.outputs["choices"][0]["message"]["content"] == "echo: two plus two"
    agreement = status.info["agreement"]
    assert agreement["replicas"] == 3
    assert agreement["disagreed"] == [odd]
    assert agreement["winner"].startswith("alike-")
    assert sorted(agreement["similarity"]) == sorted(["alike-0", "alike-1", odd])
    assert (
        agreement["similarity"][odd]
        < 0.9
        <= min(v for k, v in agreement["similarity"].items() if k != odd)
    )
    listed = server.cli("nodes", "list")
    odd_line = next(line for line in listed.splitlines() if odd in line)
    assert "1 of 1" in odd_line
    assert all("0 of 1" in line for line in listed.splitlines() if "alike-" in line)
