"""``inferq worker --metrics-port``: a process that runs only a worker serves its own job
counters on ``GET /metrics``; jobs submitted through a separate ``inferq serve
--no-worker`` move them by what they did."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_metrics import Samples, bearer, moved, value
from tests.support.server import Server, _env, fake_models_file, free_port

pytestmark = pytest.mark.integration

TOKEN = "worker-scrape-token-0123456789"


class WorkerProcess:
    """``inferq worker --metrics-port PORT`` beside a server, on its data directory."""

    def __init__(self, server: Server, port: int) -> None:
        assert server.models_file is not None
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = server.data_dir.parent / "worker.log"
        argv = [sys.executable, "-m", "inferq", "worker", "--data-dir", str(server.data_dir)]
        argv += ["--models", str(server.models_file), "--metrics-port", str(port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=_env(server.env)
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"worker's metrics not up:\n{self.log_path.read_text()}")

    def scrape(self, secret: str) -> Samples:
        return self.parse(httpx.get(f"{self.url}/metrics", headers=bearer(secret), timeout=10))

    @staticmethod
    def parse(answer: httpx.Response) -> Samples:
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text)
            for s in family.samples
        }

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, WorkerProcess]]:
    root: Path = tmp_path_factory.mktemp("worker-metrics")
    models = fake_models_file(root / "models.toml", slots=2)
    env = {"INFERQ_METRICS_TOKEN": TOKEN}
    server = Server(root / "data", models_file=models, env=env, args=("--no-worker",)).start()
    try:
        worker = WorkerProcess(server, free_port())
        try:
            yield server, worker
        finally:
            worker.stop()
    finally:
        server.stop()


def test_the_worker_counts_the_jobs_it_ran(pair: tuple[Server, WorkerProcess]) -> None:
    server, worker = pair
    admin = server.admin_key()
    before = worker.scrape(admin)
    assert value(before, "inferq_engine_slots", model="fake", state="free") == 2
    key = server.create_key("worker-metrics-client", "metrics")
    with httpx.Client(base_url=server.url, headers=bearer(key), timeout=60) as client:
        for _ in range(3):
            chat = {"model": "fake", "messages": [{"role": "user", "content": "one two three"}]}
            answer = client.post("/v1/chat/completions", json=chat)
            assert answer.status_code == 200, answer.text
    after = worker.scrape(TOKEN)
    interactive = {"model": "fake", "class": "interactive"}
    assert moved(before, after, "inferq_jobs_total", **interactive, outcome="succeeded") == 3
    assert moved(before, after, "inferq_job_run_seconds_count", **interactive) == 3
    assert moved(before, after, "inferq_job_queue_seconds_count", **interactive) == 3
    assert moved(before, after, "inferq_time_to_first_token_seconds_count", **interactive) == 3
    # the fake engine: a token per word and one per message; "echo:" and each word back
    assert moved(before, after, "inferq_tokens_total", model="fake", kind="prompt") == 3 * 4
    assert moved(before, after, "inferq_tokens_total", model="fake", kind="completion") == 3 * 4
    assert value(after, "inferq_engine_slots", model="fake", state="busy") == 0
    assert value(after, "inferq_queue_depth", **interactive) == 0
    # the API process ran nothing: its own counters did not move
    api = WorkerProcess.parse(httpx.get(f"{server.url}/metrics", headers=bearer(TOKEN)))
    assert value(api, "inferq_jobs_total", **interactive, outcome="succeeded") == 0
    assert value(api, "inferq_http_requests_total", dialect="openai", status="200") == 3


def test_the_worker_metrics_need_an_admin_key_or_the_token(
    pair: tuple[Server, WorkerProcess],
) -> None:
    server, worker = pair
    user = server.create_key("worker-metrics-user", "someone")
    for headers in ({}, bearer(user), bearer("not-the-token"), bearer(TOKEN + "x")):
        answer = httpx.get(f"{worker.url}/metrics", headers=headers, timeout=10)
        assert answer.status_code == 401, headers
        assert "inferq_" not in answer.text
