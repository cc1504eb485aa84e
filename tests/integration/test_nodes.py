"""Nodes: ``inferq node`` processes that pull work from a server over HTTP.

A real ``inferq serve`` whose models file declares handler models with ``engine =
"remote"``, real ``inferq node`` processes running tests.support.node_handlers'
Workbench, the ``together`` SDK as the client, and the node protocol spoken by hand
where a test needs to misbehave as a node.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import together

from tests.integration.helpers import new_key
from tests.support.node_handlers import png_bytes
from tests.support.nodes import NodeProc, events, handler_node, wait_for
from tests.support.server import Server

pytestmark = pytest.mark.integration

MODEL = "my-org/workbench"
#: a handler model no node process serves: the tests speak the protocol for it by hand
MANUAL = "my-org/manual"
MODELS = f"""\
[models."{MODEL}"]
engine = "remote"
handler = true

[models."{MANUAL}"]
engine = "remote"
handler = true
"""
LEASE_SECONDS = 3
#: the routes a node token opens (inferq's protocol and Infera's node endpoints)
NODE_PATHS = ("/node/", "/worker/", "/register_node_secret", "/check_node_secret")
MAX_OUTPUT = 16 * 1024
MAX_FILE = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("nodes")
    models = root / "models.toml"
    models.write_text(MODELS)
    env = {
        "INFERQ_LEASE_SECONDS": str(LEASE_SECONDS),
        "INFERQ_NODE_MAX_OUTPUT_BYTES": str(MAX_OUTPUT),
        "INFERQ_NODE_MAX_FILE_BYTES": str(MAX_FILE),
    }
    srv = Server(root / "data", models_file=models, env=env).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def api_key(server: Server) -> str:
    return new_key(server, "alice")


@pytest.fixture
def tq(server: Server, api_key: str) -> Iterator[together.Together]:
    with together.Together(api_key=api_key, base_url=server.url, max_retries=0) as client:
        yield client


def new_node(server: Server, prefix: str = "node") -> tuple[str, str]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    return name, server.cli("nodes", "create", "--name", name).strip().splitlines()[-1]


@pytest.fixture
def node_log(tmp_path: Path) -> Path:
    return tmp_path / "handler-events.jsonl"


@pytest.fixture
def nodes(server: Server, node_log: Path) -> Iterator[list[NodeProc]]:
    """The node processes a test starts: stopped after it."""
    started: list[NodeProc] = []
    yield started
    for proc in started:
        proc.stop()


def start_node(server: Server, nodes: list[NodeProc], log: Path, prefix: str = "n") -> NodeProc:
    name, token = new_node(server, prefix)
    proc = handler_node(server, token, name, MODEL, log=log)
    nodes.append(proc)
    return proc


def submit(tq: together.Together, payload: dict[str, Any]) -> str:
    return str(tq.beta.jig.queue.submit(model=MODEL, payload=payload).request_id)


def final(tq: together.Together, request_id: str, model: str = MODEL, timeout: float = 60) -> Any:
    return wait_for(
        f"job {request_id} to end",
        lambda: (
            s
            if (s := tq.beta.jig.queue.retrieve(model=model, request_id=request_id)).status
            in ("done", "failed", "canceled")
            else None
        ),
        timeout,
    )


# -- a handler model through the together SDK ---------------------------------------------


def test_a_handler_runs_a_freeform_payload_and_its_png_is_read_back(
    server: Server, tq: together.Together, api_key: str, nodes: list[NodeProc], node_log: Path
) -> None:
    payload = {"mode": "echo", "prompt": "a red square", "nested": {"n": [1, 2, 3]}}
    request_id = submit(tq, payload)  # accepted while no node is connected
    time.sleep(0.5)
    assert tq.beta.jig.queue.retrieve(model=MODEL, request_id=request_id).status == "pending"
    start_node(server, nodes, node_log)
    status = final(tq, request_id)
    assert status.status == "done", status
    outputs = status.outputs
    assert outputs["echo"] == payload  # passed to the handler unchanged
    assert outputs["frames"] == 48
    assert status.info["progress"] == 1
    assert status.info["stage"] == "render"  # ctx.emit, merged into info
    url = outputs["image"]
    assert url.startswith(f"{server.url}/v1/outputs/{request_id}/")
    image = httpx.get(url, headers={"authorization": f"Bearer {api_key}"})
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content == png_bytes()
    # only the job's tenant reads it
    other = new_key(server, "mallory")
    assert httpx.get(url, headers={"authorization": f"Bearer {other}"}).status_code == 404
    assert httpx.get(url).status_code == 401
    _, token = new_node(server, "reader")
    assert httpx.get(url, headers={"authorization": f"Bearer {token}"}).status_code == 401


def test_job_failed_is_not_retried_and_a_crash_is(
    server: Server, tq: together.Together, nodes: list[NodeProc], node_log: Path
) -> None:
    start_node(server, nodes, node_log)
    failed = submit(tq, {"mode": "fail"})
    crashed = submit(tq, {"mode": "crash"})
    status = final(tq, failed)
    assert status.status == "failed"
    assert "asked to fail" in status.info["error"]
    assert status.retries == 0
    status = final(tq, crashed)
    assert status.status == "failed"
    assert status.retries == 3  # four attempts, as for in-process jobs
    starts = [e for e in events(node_log) if e["job"] == crashed and e["event"] == "start"]
    assert [e["attempt"] for e in starts] == [1, 2, 3, 4]


def test_a_node_killed_mid_job_leaves_it_to_another_that_does_it_once(
    server: Server, tq: together.Together, nodes: list[NodeProc], node_log: Path
) -> None:
    first = start_node(server, nodes, node_log, "first")
    second_name, second_token = new_node(server, "second")  # the CLI takes seconds: before
    request_id = submit(tq, {"mode": "sleep", "seconds": 4})
    wait_for("the first node to start the job", lambda: events(node_log))
    nodes.append(handler_node(server, second_token, second_name, MODEL, log=node_log))
    first.kill()
    status = final(tq, request_id, timeout=LEASE_SECONDS * 10)
    assert status.status == "done"
    assert status.retries == 1
    mine = [e for e in events(node_log) if e["job"] == request_id]
    assert [(e["event"], e["node"][:5], e["attempt"]) for e in mine] == [
        ("start", "first", 1),
        ("start", "secon", 2),
        ("done", "secon", 2),
    ]


def test_a_cancel_reaches_the_running_handler_within_a_second(
    server: Server, tq: together.Together, nodes: list[NodeProc], node_log: Path
) -> None:
    start_node(server, nodes, node_log)
    request_id = submit(tq, {"mode": "sleep", "seconds": 30})
    wait_for("the handler to start", lambda: events(node_log))
    assert tq.beta.jig.queue.cancel(model=MODEL, request_id=request_id).status == "canceled"
    cancelled_at = time.time()
    seen = wait_for(
        "the handler to see the cancel",
        lambda: [e for e in events(node_log) if e["event"] == "cancelled"],
        timeout=10,
    )
    assert seen[0]["time"] - cancelled_at < 1.0
    assert tq.beta.jig.queue.retrieve(model=MODEL, request_id=request_id).status == "canceled"


def test_a_draining_node_finishes_its_job_and_exits_zero(
    server: Server, tq: together.Together, nodes: list[NodeProc], node_log: Path
) -> None:
    proc = start_node(server, nodes, node_log)
    request_id = submit(tq, {"mode": "sleep", "seconds": 1})
    wait_for("the handler to start", lambda: events(node_log))
    proc.stop()
    assert proc.wait_exit(20) == 0
    assert final(tq, request_id).status == "done"


def test_nodes_claim_in_the_fair_order_among_tenants(
    server: Server, tq: together.Together, nodes: list[NodeProc], node_log: Path
) -> None:
    work = {"mode": "sleep", "seconds": 0.1}
    crowd = [submit(tq, work) for _ in range(8)]
    with together.Together(
        api_key=new_key(server, "zed"), base_url=server.url, max_retries=0
    ) as other:
        alone = str(other.beta.jig.queue.submit(model=MODEL, payload=work).request_id)
    start_node(server, nodes, node_log)
    wait_for("every job to run", lambda: len(events(node_log)) >= 2 * 9)
    order = [e["job"] for e in events(node_log) if e["event"] == "start"]
    assert set(order) == {*crowd, alone}
    # the other tenant's one job does not wait behind the eight submitted before it
    assert order.index(alone) <= 1


# -- credentials -----------------------------------------------------------------------------


def test_a_wrong_token_ends_the_node_with_a_clear_message(
    server: Server, nodes: list[NodeProc], node_log: Path
) -> None:
    proc = handler_node(server, "iqn-not-a-token", "wrong", MODEL, log=node_log)
    nodes.append(proc)
    assert proc.wait_exit(30) == 2
    assert "refused the node token" in proc.log()
    assert "not valid" in proc.log()


def test_a_revoked_token_ends_a_running_node(
    server: Server, nodes: list[NodeProc], node_log: Path
) -> None:
    name, token = new_node(server, "revoked")
    proc = handler_node(server, token, name, MODEL, log=node_log)
    nodes.append(proc)
    wait_for("the node to connect", lambda: "connected" in proc.log())
    server.cli("nodes", "revoke", name)
    assert proc.wait_exit(15) == 2
    assert "has been revoked" in proc.log()
    listed = server.cli("nodes", "list")
    assert name in listed


def test_api_keys_and_node_tokens_are_kept_apart_on_every_endpoint(
    server: Server, api_key: str
) -> None:
    _, token = new_node(server, "apart")
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    open_paths = {"/healthz", "/readyz"}
    # Fireworks' signed URLs: the signature is the credential (403 for a bad one), no key
    signed = ("/v1/uploads/", "/v1/downloads/")
    checked = 0
    wrong = []
    with httpx.Client(base_url=server.url) as http:
        for path, methods in paths.items():
            if path in open_paths or path.startswith(signed):
                continue
            concrete = path.replace("{", "x").replace("}", "")  # any value: auth comes first
            for method in methods:
                node_route = path.startswith(NODE_PATHS)
                secret = api_key if node_route else token
                answer = http.request(
                    method.upper(),
                    concrete,
                    headers={"authorization": f"Bearer {secret}", "api_key": secret},
                    json={},
                )
                if answer.status_code != 401:
                    wrong.append((method, path, answer.status_code, answer.text[:200]))
                checked += 1
    assert not wrong
    assert checked > 40


# -- the protocol's bad input ----------------------------------------------------------------


class Manual:
    """A node spoken by hand, for the model no node process serves."""

    def __init__(self, server: Server, token: str) -> None:
        self.http = httpx.Client(
            base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=30
        )
        self.session = uuid.uuid4().hex
        hello = self.post("hello", protocol=1, models={MANUAL: 4})
        assert hello.status_code == 200, hello.text

    def close(self) -> None:
        self.http.close()

    def post(self, what: str, **body: Any) -> httpx.Response:
        return self.http.post(f"/node/v1/{what}", json={"session": self.session, **body})

    def claim(self) -> dict[str, Any]:
        answer = self.post("claim", free={MANUAL: 1}, wait=5)
        assert answer.status_code == 200, answer.text
        jobs: list[dict[str, Any]] = answer.json()["jobs"]
        assert len(jobs) == 1
        return jobs[0]


def status_of(tq: together.Together, request_id: str) -> Any:
    return tq.beta.jig.queue.retrieve(model=MANUAL, request_id=request_id)


def test_protocol_bad_input_gets_a_clear_4xx_and_changes_nothing(
    server: Server, tq: together.Together
) -> None:
    _, token = new_node(server, "manual")
    node, other = Manual(server, token), Manual(server, token)
    try:
        check_bad_input(tq, node, other)
    finally:
        node.close()
        other.close()


def check_bad_input(tq: together.Together, node: Manual, other: Manual) -> None:
    request_id = str(tq.beta.jig.queue.submit(model=MANUAL, payload={"a": 1}).request_id)
    job = node.claim()
    assert job["id"] == request_id and job["kind"] == "payload"
    assert job["request"]["payload"] == {"a": 1}
    lease = {"id": job["id"], "attempt": job["attempt"]}
    ok_result = {"outputs": {"ok": True}}

    def refused(answer: httpx.Response, status: int, code: str) -> None:
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == code, answer.text

    # unknown job, stale attempt, another session: nothing written
    refused(node.post("complete", id="nope", attempt=1, result=ok_result), 404, "not_found")
    refused(node.post("complete", id=job["id"], attempt=9, result=ok_result), 409, "lease_lost")
    refused(other.post("complete", **lease, result=ok_result), 409, "lease_lost")
    err = {"code": "x", "message": "y"}
    refused(other.post("fail", **lease, error=err, retry=False), 409, "lease_lost")
    beat = other.post("heartbeat", jobs=[lease])
    assert beat.json() == {"held": [], "cancelled": [job["id"]]}
    # a batch of results: each refused on its own
    stale = {**lease, "attempt": 9, "result": ok_result}
    mixed = [{"id": "nope", "attempt": 1, "result": ok_result}, lease, stale]
    fates = node.post("results", results=mixed).json()["results"]
    assert [(f["ok"], f["code"]) for f in fates] == [
        (False, "not_found"),
        (False, "invalid_request"),
        (False, "lease_lost"),
    ]
    refused(node.post("results", results=[]), 400, "invalid_request")
    # oversized and malformed bodies
    big = {"outputs": {"blob": "x" * (MAX_OUTPUT + 1)}}
    refused(node.post("complete", **lease, result=big), 413, "payload_too_large")
    refused(node.post("complete", **lease, result={"no": "outputs"}), 400, "invalid_request")
    refused(node.post("complete", **lease), 400, "invalid_request")
    refused(node.post("claim", free={MANUAL: "many"}), 400, "invalid_request")
    refused(node.post("claim", free={"not-served": 1}), 400, "invalid_request")
    refused(node.post("hello", protocol=99, models={MANUAL: 1}), 400, "invalid_request")
    refused(node.post("heartbeat", jobs=[{**lease, "progress": 7}]), 400, "invalid_request")
    raw = node.http.post(
        "/node/v1/claim", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= raw.status_code < 500
    files = f"/node/v1/jobs/{job['id']}/files"
    params = {"session": node.session, "attempt": job["attempt"]}
    refused(node.http.put(f"{files}/.hidden", params=params, content=b"x"), 400, "invalid_request")
    huge = node.http.put(f"{files}/big.bin", params=params, content=b"x" * (MAX_FILE + 1))
    refused(huge, 413, "payload_too_large")
    stale = {**params, "attempt": 9}
    refused(node.http.put(f"{files}/a.bin", params=stale, content=b"x"), 409, "lease_lost")
    # nothing of it changed the job: still running, then done by its real lease
    status = status_of(tq, request_id)
    assert status.status == "running" and status.outputs is None and status.retries == 0
    beat = node.post("heartbeat", jobs=[{**lease, "progress": 0.25, "info": {"k": "v"}}])
    assert beat.json() == {"held": [job["id"]], "cancelled": []}
    assert node.post("complete", **lease, result=ok_result).status_code == 200
    status = status_of(tq, request_id)
    assert status.status == "done"
    assert status.outputs == {"ok": True}
    assert status.info["k"] == "v"
    # and a finished job takes no second result
    refused(node.post("complete", **lease, result=ok_result), 409, "lease_lost")


# -- metrics ---------------------------------------------------------------------------------


def test_node_counters_move_by_what_the_nodes_reported(
    server: Server, tq: together.Together, nodes: list[NodeProc], node_log: Path
) -> None:
    from tests.integration.test_metrics import bearer, moved, value
    from tests.integration.test_worker_metrics import WorkerProcess

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        answer = httpx.get(f"{server.url}/metrics", headers=bearer(server.admin_key()), timeout=10)
        return WorkerProcess.parse(answer)

    before = scrape()
    proc = start_node(server, nodes, node_log, "metrics")
    name = proc.name
    done, failed = submit(tq, {"mode": "echo", "prompt": "x"}), submit(tq, {"mode": "fail"})
    assert final(tq, done).status == "done"
    assert final(tq, failed).status == "failed"
    # a node spoken by hand: a result fenced off (stale attempt), and two through /results
    manual_name, token = new_node(server, "manual-metrics")
    manual = Manual(server, token)
    try:
        ids = [submit_manual(tq) for _ in range(2)]
        jobs = [manual.claim(), manual.claim()]
        assert sorted(j["id"] for j in jobs) == sorted(ids)
        ok_result = {"outputs": {"ok": True}}
        stale = manual.post("complete", id=jobs[0]["id"], attempt=9, result=ok_result)
        assert stale.status_code == 409
        results = [
            {"id": jobs[0]["id"], "attempt": jobs[0]["attempt"], "result": ok_result},
            {
                "id": jobs[1]["id"],
                "attempt": jobs[1]["attempt"],
                "error": {"code": "x", "message": "y"},
                "retry": False,
            },
        ]
        fates = manual.post("results", results=results).json()["results"]
        assert [f["ok"] for f in fates] == [True, True]
        after = scrape()
    finally:
        manual.close()
    assert moved(before, after, "inferq_node_claims_total", node=name) == 2
    assert moved(before, after, "inferq_node_jobs_total", node=name, outcome="succeeded") == 1
    assert moved(before, after, "inferq_node_jobs_total", node=name, outcome="failed") == 1
    assert moved(before, after, "inferq_node_claims_total", node=manual_name) == 2
    for outcome in ("succeeded", "failed", "lost"):
        labels = {"node": manual_name, "outcome": outcome}
        assert moved(before, after, "inferq_node_jobs_total", **labels) == 1, outcome
    # both were seen just now; a node never seen does not count
    new_node(server, "never-seen")
    assert value(after, "inferq_nodes_connected") >= 2
    assert value(scrape(), "inferq_nodes_connected") == value(after, "inferq_nodes_connected")


def submit_manual(tq: together.Together) -> str:
    return str(tq.beta.jig.queue.submit(model=MANUAL, payload={"a": 1}).request_id)
