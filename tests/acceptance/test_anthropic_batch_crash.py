"""Crash safety of Anthropic's Message Batches: ``kill -9`` the server while a message
batch runs, restart it, and the results hold every request exactly once.

The client is the official ``anthropic`` SDK. One test per engine: the fake engine with
many requests (its execution log says when some have run), and SmolLM2 with a few.

1. Create the batch (the answer means its requests are on disk), and kill the server at
   once: the batch may not even have been read yet.
2. Restart; once some requests have run and others are running, kill it again.
3. Restart; wait for ``ended``, then read the results through the SDK
   (``client.messages.batches.results``, which follows the batch's ``results_url``):
   every ``custom_id`` once, each ``succeeded`` with its own answer, and the counts agree.

And with the worker in a process of its own (``serve --no-worker`` and ``inferq worker``
on one SQLite file): kill -9 the worker mid-batch, start another, the same checks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types.messages import MessageBatch

from tests.support.server import DEFAULT_MODEL, Server

pytestmark = pytest.mark.integration

LEASE_SECONDS = 2


@dataclass(frozen=True)
class Workload:
    model: str
    requests: int
    #: the models file, given the test's directory and the execution log's path
    models: Callable[[Path, Path], str | None]
    text: Callable[[int], str]
    #: the answer request i must get; None: any non-empty text
    expected: Callable[[int], str | None]
    max_tokens: int
    budget: float


FAKE = Workload(
    model="fake",
    requests=300,
    models=lambda d, log: (
        f"""\
[models.fake]
engine = "fake"
slots = 4
context_length = 512
token_delay = 0.01
execution_log = "{log}"
"""
    ),
    text=lambda i: f"request {i} w0 w1 w2",
    expected=lambda i: f"echo: request {i} w0 w1 w2",
    max_tokens=16,
    budget=120,
)

LLAMA = Workload(
    model=DEFAULT_MODEL,
    requests=6,
    models=lambda d, log: None,
    text=lambda i: f"Count from {i} to 100, separated by commas.",
    expected=lambda i: None,
    max_tokens=8,
    budget=150,
)


class Scenario:
    def __init__(self, tmp_path: Path, workload: Workload) -> None:
        self.w = workload
        self.data_dir = tmp_path / "data"
        self.log = tmp_path / "executed.log"
        models = workload.models(tmp_path, self.log)
        self.models_file: Path | None = None
        if models is not None:
            self.models_file = tmp_path / "models.toml"
            self.models_file.write_text(models)
        self.servers: list[Server] = []
        self.started = time.monotonic()
        self.key = ""

    @property
    def server(self) -> Server:
        return self.servers[-1]

    def start_server(self) -> None:
        env = {"INFERQ_LEASE_SECONDS": str(LEASE_SECONDS)}
        server = Server(self.data_dir, models_file=self.models_file, env=env)
        self.servers.append(server)
        server.start(timeout=60)

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key=self.key, base_url=self.server.url, max_retries=0)

    def fail(self, message: str) -> None:
        logs = "\n".join(s.log()[-3000:] for s in self.servers[-2:])
        pytest.fail(f"{message}\n--- server log tail ---\n{logs}", pytrace=False)

    def wait_for(self, phase: str, done: Callable[[], bool]) -> None:
        while time.monotonic() - self.started < self.w.budget:
            if done():
                return
            time.sleep(0.05)
        self.fail(f"{phase}: not reached within {self.w.budget}s")

    def executed(self) -> int:
        """Requests the fake engine ran to their end (rerun ones count again)."""
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def running(self) -> bool:
        """Whether the server's batch runner has seen a row start (its log says so)."""
        return "queued -> running" in self.server.log()

    def request(self, i: int) -> dict[str, Any]:
        return {
            "custom_id": f"req-{i}",
            "params": {
                "model": self.w.model,
                "max_tokens": self.w.max_tokens,
                "temperature": 0,
                "messages": [{"role": "user", "content": self.w.text(i)}],
            },
        }


@pytest.mark.slow
@pytest.mark.parametrize("workload", [FAKE, LLAMA], ids=["fake", "llama"])
def test_a_message_batch_survives_kill_9(tmp_path: Path, workload: Workload) -> None:
    s = Scenario(tmp_path, workload)
    try:
        run(s, workload)
    finally:
        for server in s.servers:
            server.stop()


def run(s: Scenario, workload: Workload) -> None:
    s.start_server()
    s.key = s.server.create_key("crash")
    with s.client() as client:
        created = client.messages.batches.create(
            requests=[s.request(i) for i in range(workload.requests)]
        )
    # 1. at once: the batch is acknowledged, maybe not read yet
    s.server.kill()
    s.start_server()

    # 2. with requests done and requests running
    if workload.model == "fake":
        s.wait_for("some requests run", lambda: s.executed() >= workload.requests // 4)
    else:
        s.wait_for("rows running", s.running)
        time.sleep(2.0)  # a few of the ten have ended, one is running
    s.server.kill()
    s.start_server()
    check_results(s, created.id)


def check_results(s: Scenario, batch_id: str) -> None:
    """Wait for the batch to end; every request answered once, each with its answer."""
    workload = s.w
    with s.client() as client:

        def ended() -> MessageBatch | None:
            batch = client.messages.batches.retrieve(batch_id)
            return batch if batch.processing_status == "ended" else None

        s.wait_for("ended", lambda: ended() is not None)
        final = client.messages.batches.retrieve(batch_id)
        lines = list(client.messages.batches.results(batch_id))

    seen = Counter(line.custom_id for line in lines)
    assert set(seen) == {f"req-{i}" for i in range(workload.requests)}, "requests missing"
    assert max(seen.values()) == 1, f"requests answered twice: {seen.most_common(3)}"
    for line in lines:
        assert line.result.type == "succeeded", line
        i = int(line.custom_id.removeprefix("req-"))
        text = line.result.message.content[0].text  # type: ignore[union-attr]
        want = workload.expected(i)
        assert text == want if want is not None else text.strip()
    assert final.request_counts.model_dump() == {
        "processing": 0,
        "succeeded": workload.requests,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }


class Worker:
    """``inferq worker``: the batch runner and the engines, no HTTP, on the server's
    SQLite file."""

    def __init__(self, s: Scenario) -> None:
        self.log_path = s.data_dir.parent / f"worker-{len(s.servers)}-{time.monotonic_ns()}.log"
        args = [sys.executable, "-m", "inferq", "worker", "--data-dir", str(s.data_dir)]
        assert s.models_file is not None
        args += ["--models", str(s.models_file)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
        env.update({"PYTHONUNBUFFERED": "1", "INFERQ_LEASE_SECONDS": str(LEASE_SECONDS)})
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.mark.slow
def test_a_message_batch_survives_kill_9_of_its_worker(tmp_path: Path) -> None:
    """The API in one process (``serve --no-worker``, never killed) and the worker in
    another: kill -9 the worker while the batch runs, start a new one, and every request
    is answered once."""
    s = Scenario(tmp_path, FAKE)
    server = Server(
        s.data_dir,
        models_file=s.models_file,
        env={"INFERQ_LEASE_SECONDS": str(LEASE_SECONDS)},
        args=("--no-worker",),
    )
    s.servers.append(server)
    workers: list[Worker] = []
    try:
        server.start(timeout=60)
        s.key = server.create_key("crash")
        with s.client() as client:
            created = client.messages.batches.create(
                requests=[s.request(i) for i in range(FAKE.requests)]
            )
        workers.append(Worker(s))
        s.wait_for("some requests run", lambda: s.executed() >= FAKE.requests // 4)
        workers[-1].kill()
        done_at_kill = s.executed()
        assert done_at_kill < FAKE.requests, "the batch ended before the kill"
        workers.append(Worker(s))
        check_results(s, created.id)
    finally:
        for worker in workers:
            worker.kill()
        server.stop()
