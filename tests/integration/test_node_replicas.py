"""Redundant execution: a model with ``replicas = 3`` runs each job on three distinct
nodes and returns the majority answer. Two ``inferq node`` processes answer alike (the
fake engine); the third node, an Infera-style one spoken by this test, answers something
else: the majority wins, and the disagreement is recorded on the job and the node."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
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
    # short leases: a killed node's replica is claimed again within seconds
    srv = start_server(root, models=SERVER_MODELS, env={"INFERQ_LEASE_SECONDS": "2"})
    (root / "node.toml").write_text(NODE_MODELS)
    procs = [
        NodeProc(srv, token_of(srv, f"alike-{i}"), f"alike-{i}", "--models",
                 str(root / "node.toml"), log=root / "events")
        for i in range(2)
    ]  # fmt: skip
    try:
        for proc in procs:
            proc.wait_connected()  # a sync request for their model is refused until then
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


def children(server: Server, job_id: str) -> dict[str, dict[str, Any]]:
    """The job's replicas as the server's database holds them."""
    db = sqlite3.connect(f"file:{server.data_dir / 'inferq.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            "SELECT id, state, attempt, info FROM jobs WHERE id LIKE ? ORDER BY id",
            (f"{job_id}.r%",),
        ).fetchall()
    finally:
        db.close()
    return {r[0]: {"state": r[1], "attempt": r[2], "info": json.loads(r[3] or "{}")} for r in rows}


def test_a_node_killed_mid_replica_leaves_it_to_another_node_and_the_job_ends_once(
    server: Server,
) -> None:
    root = server.data_dir.parent
    (root / "slow.toml").write_text(NODE_MODELS + "token_delay = 5.0\n")
    spare_log = root / "spare-executions"
    (root / "spare.toml").write_text(NODE_MODELS + f'execution_log = "{spare_log}"\n')
    slow_token, spare_token = token_of(server, "slow"), token_of(server, "spare")
    slow = spare = None
    with together.Together(
        api_key=new_key(server, "finn"), base_url=server.url, max_retries=0
    ) as tq:
        payload = {"messages": [{"role": "user", "content": "three plus one"}], "max_tokens": 8}
        request_id = str(tq.beta.jig.queue.submit(model=MODEL, payload=payload).request_id)
        try:
            # the two alike nodes answer one replica each; the third waits for a node
            wait_for(
                "two replicas answered",
                lambda: (
                    [c["state"] for c in children(server, request_id).values()].count("succeeded")
                    == 2
                ),
            )
            slow = NodeProc(server, slow_token, "slow", "--models", str(root / "slow.toml"),
                            log=root / "events")  # fmt: skip
            wait_for(
                "the slow node running the third replica",
                lambda: any(
                    c["state"] == "running" and c["info"].get("replica_node")
                    for c in children(server, request_id).values()
                ),
            )
            slow.kill()
            spare = NodeProc(server, spare_token, "spare", "--models",
                             str(root / "spare.toml"), log=root / "events")  # fmt: skip
            status = wait_for(
                "the replicated job to end",
                lambda: (
                    s
                    if (s := tq.beta.jig.queue.retrieve(model=MODEL, request_id=request_id)).status
                    in ("done", "failed")
                    else None
                ),
            )
        finally:
            for proc in (slow, spare):
                if proc is not None:
                    proc.stop()
    assert status.status == "done", status
    assert status.outputs["choices"][0]["message"]["content"] == "echo: three plus one"
    assert status.retries == 0  # the job itself was never re-run, only the killed replica
    agreement = status.info["agreement"]
    assert sorted(agreement["agreed"]) == ["alike-0", "alike-1", "spare"]
    assert agreement["disagreed"] == [] and agreement["majority"]
    kids = children(server, request_id)
    assert sorted((c["state"], c["attempt"]) for c in kids.values()) == [
        ("succeeded", 1),
        ("succeeded", 1),
        ("succeeded", 2),  # the killed node's attempt, then the spare's
    ]
    assert spare_log.read_text().splitlines() == ["three plus one"]  # ran once there
    listed = server.cli("nodes", "list").splitlines()
    spare_line = next(line for line in listed if " spare " in f" {line} ")
    slow_line = next(line for line in listed if " slow " in f" {line} ")
    assert "0 of 1" in spare_line
    assert not re.search(r"\b\d+ of \d+\b", slow_line)  # it answered nothing: not compared


def test_a_sync_openai_chat_gets_the_decided_answer(server: Server) -> None:
    root = server.data_dir.parent
    third = NodeProc(server, token_of(server, "third"), "third", "--models",
                     str(root / "node.toml"), log=root / "events")  # fmt: skip
    try:
        key = new_key(server, "gwen")
        with openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0) as client:
            answer = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "one plus one"}], max_tokens=8
            )
    finally:
        third.stop()
    assert answer.choices[0].message.content == "echo: one plus one"
    third_line = next(line for line in server.cli("nodes", "list").splitlines() if "third" in line)
    assert "0 of 1" in third_line
