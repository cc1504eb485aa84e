"""Crash safety of batches: ``kill -9`` the server mid-batch, restart, and the output
holds every ``custom_id`` exactly once.

Scenario (one test per engine):

1. Start ``inferq serve`` with a short worker lease; upload a JSONL file through
   ``/v1/files`` and create a batch through ``/v1/batches`` (OpenAI's wire format).
2. Kill the server while the batch validates (the fake workload's file is big
   enough for that to take a while), restart it.
3. Kill it again once some rows are done and others are running, restart it.
4. Wait for ``completed``, then read the output and error files: every input
   ``custom_id`` appears exactly once, none in the error file, each with its
   own answer (the fake engine's is known in advance), and the counts agree.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import DEFAULT_MODEL, Server, fake_models_file

pytestmark = pytest.mark.integration

LEASE_SECONDS = 2


@dataclass(frozen=True)
class Workload:
    model: str
    rows: int
    models_file: Callable[[Path], Path | None]
    text: Callable[[int], str]
    #: the answer row i must get; None: any non-empty text
    expected: Callable[[int], str | None]
    max_tokens: int
    budget: float


FAKE = Workload(
    model="fake",
    rows=1500,
    # 5 slots (one kept for sync requests): 4 rows at a time, ~0.05 s each
    models_file=lambda d: fake_models_file(d / "models.toml", token_delay=0.01, slots=5),
    text=lambda i: f"row {i} " + " ".join(f"w{k}" for k in range(3)),
    expected=lambda i: f"echo: row {i} " + " ".join(f"w{k}" for k in range(3)),
    max_tokens=16,
    budget=120,
)

LLAMA = Workload(
    model=DEFAULT_MODEL,
    rows=14,
    models_file=lambda d: None,
    text=lambda i: f"Count from {i} to 100, separated by commas.",
    expected=lambda i: None,
    max_tokens=8,
    budget=120,
)


class Scenario:
    def __init__(self, tmp_path: Path, workload: Workload) -> None:
        self.w = workload
        self.data_dir = tmp_path / "data"
        self.models_file = workload.models_file(tmp_path)
        self.env = {"INFERQ_LEASE_SECONDS": str(LEASE_SECONDS)}
        self.servers: list[Server] = []
        self.started = time.monotonic()
        self.input = tmp_path / "input.jsonl"
        with self.input.open("w") as f:
            for i in range(workload.rows):
                f.write(json.dumps(self.line(i)) + "\n")
        self.key = ""

    def line(self, i: int) -> dict[str, Any]:
        return {
            "custom_id": f"row-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": self.w.model,
                "messages": [{"role": "user", "content": self.w.text(i)}],
                "max_tokens": self.w.max_tokens,
                "temperature": 0,
            },
        }

    @property
    def server(self) -> Server:
        return self.servers[-1]

    def start_server(self) -> None:
        server = Server(self.data_dir, models_file=self.models_file, env=self.env)
        self.servers.append(server)
        server.start(timeout=60)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
        )

    def fail(self, message: str) -> None:
        logs = "\n".join(s.log()[-3000:] for s in self.servers[-2:])
        pytest.fail(f"{message}\n--- server log tail ---\n{logs}", pytrace=False)

    def batch(self, batch_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/v1/batches/{batch_id}")
        if response.status_code != 200:
            self.fail(f"GET batch answered {response.status_code}: {response.text}")
        body: dict[str, Any] = response.json()
        return body

    def wait_for(self, batch_id: str, phase: str, done: Callable[[dict[str, Any]], bool]) -> None:
        while time.monotonic() - self.started < self.w.budget:
            body = self.batch(batch_id)
            if done(body):
                return
            if body["status"] in ("failed", "expired", "cancelled"):
                self.fail(f"{phase}: the batch ended {body['status']}: {body}")
            time.sleep(0.05)
        self.fail(f"{phase}: not reached within {self.w.budget}s: {self.batch(batch_id)}")

    def content(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        with self.client() as client:
            response = client.get(f"/v1/files/{file_id}/content")
        assert response.status_code == 200, response.text
        return [json.loads(line) for line in response.text.splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("workload", [FAKE, LLAMA], ids=["fake", "llama"])
def test_batch_survives_kill_9(tmp_path: Path, workload: Workload) -> None:
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
        with s.input.open("rb") as f:
            uploaded = client.post(
                "/v1/files",
                files={"file": ("input.jsonl", f, "application/jsonl")},
                data={"purpose": "batch"},
            )
        assert uploaded.status_code == 200, uploaded.text
        created = client.post(
            "/v1/batches",
            json={
                "input_file_id": uploaded.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        assert created.status_code == 200, created.text
    batch_id = created.json()["id"]

    # 1. kill while the file is being validated (or as soon after as we get there)
    s.server.kill()
    s.start_server()

    # 2. kill with rows done and rows running
    target = max(1, workload.rows // 4)
    s.wait_for(batch_id, "some rows done", lambda b: b["request_counts"]["completed"] >= target)
    s.server.kill()
    s.start_server()

    s.wait_for(batch_id, "completed", lambda b: b["status"] == "completed")
    final = s.batch(batch_id)
    output = s.content(final["output_file_id"])
    errors = s.content(final["error_file_id"])

    seen = Counter(line["custom_id"] for line in output + errors)
    expected_ids = {f"row-{i}" for i in range(workload.rows)}
    assert set(seen) == expected_ids, "rows missing from the output or unknown rows in it"
    assert max(seen.values()) == 1, f"rows in the output twice: {seen.most_common(3)}"
    assert errors == [], f"rows failed: {errors[:3]}"
    for line in output:
        i = int(line["custom_id"].removeprefix("row-"))
        response = line["response"]
        assert response["status_code"] == 200
        text = response["body"]["choices"][0]["message"]["content"]
        want = workload.expected(i)
        assert text == want if want is not None else text.strip()
    assert final["request_counts"] == {
        "total": workload.rows,
        "completed": workload.rows,
        "failed": 0,
    }
