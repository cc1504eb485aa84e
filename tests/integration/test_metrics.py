"""``GET /metrics`` on a real server with the fake engine: who may read it, and that the
numbers move by what the jobs did."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import start_server, wait_until
from tests.support.server import Server

pytestmark = pytest.mark.integration

TOKEN = "scrape-token-0123456789"
MODELS = """\
[models.fake]
engine = "fake"
context_length = 512
slots = 2

[models.slow]
engine = "fake"
context_length = 2048
slots = 1
token_delay = 0.05
"""
FAIL_TRIGGER = "__inferq_fail__"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("metrics")
    srv = start_server(root, models=MODELS, env={"INFERQ_METRICS_TOKEN": TOKEN})
    try:
        yield srv
    finally:
        srv.stop()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def scrape(server: Server) -> Samples:
    answer = httpx.get(f"{server.url}/metrics", headers=bearer(TOKEN), timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_need_an_admin_key_or_the_token(server: Server) -> None:
    url = f"{server.url}/metrics"
    user = server.create_key("metrics-user", "someone")
    for headers in ({}, bearer(user), bearer("not-the-token"), bearer(TOKEN + "x")):
        answer = httpx.get(url, headers=headers, timeout=10)
        assert answer.status_code == 401, headers
        assert "inferq_" not in answer.text
    for secret in (TOKEN, server.admin_key()):
        answer = httpx.get(url, headers=bearer(secret), timeout=10)
        assert answer.status_code == 200
        assert "inferq_queue_depth" in answer.text


def test_counters_move_by_what_the_jobs_did(server: Server) -> None:
    key = server.create_key("metrics-client", "metrics")
    with httpx.Client(base_url=server.url, headers=bearer(key), timeout=60) as client:
        before, after = run_jobs(client, server)
    interactive = {"model": "fake", "class": "interactive"}
    queue_class = {"model": "fake", "class": "async"}
    assert moved(before, after, "inferq_jobs_total", **interactive, outcome="succeeded") == 3
    assert moved(before, after, "inferq_jobs_total", **queue_class, outcome="succeeded") == 2
    assert moved(before, after, "inferq_jobs_total", **queue_class, outcome="failed") == 1
    slow_class = {"model": "slow", "class": "async"}
    assert moved(before, after, "inferq_jobs_total", **slow_class, outcome="cancelled") == 1
    assert moved(before, after, "inferq_job_retries_total", model="fake") == 0
    assert moved(before, after, "inferq_job_queue_seconds_count", **interactive) == 3
    assert moved(before, after, "inferq_job_queue_seconds_count", **queue_class) == 3
    assert moved(before, after, "inferq_job_run_seconds_count", **queue_class) == 3
    assert moved(before, after, "inferq_time_to_first_token_seconds_count", **interactive) == 3
    assert moved(before, after, "inferq_time_to_first_token_seconds_count", **slow_class) == 1
    # the fake engine: a token per word and one per message; "echo:" and each word back
    assert moved(before, after, "inferq_tokens_total", model="fake", kind="prompt") == 3 * 4 + 2 * 3
    assert (
        moved(before, after, "inferq_tokens_total", model="fake", kind="completion")
        == 3 * 4 + 2 * 3
    )
    assert moved(before, after, "inferq_http_requests_total", dialect="openai", status="200") == 3
    assert moved(before, after, "inferq_http_requests_total", dialect="together", status="200") >= 6
    assert moved(before, after, "inferq_http_request_seconds_count", dialect="openai") == 3

    for model in ("fake", "slow"):
        for service_class in ("interactive", "async", "batch"):
            labels = {"model": model, "class": service_class}
            assert ("inferq_queue_depth", frozenset(labels.items())) in after
            assert value(after, "inferq_queue_depth", **labels) == 0
            assert value(after, "inferq_jobs_running", **labels) == 0
        assert value(after, "inferq_engine_slots", model=model, state="busy") == 0
    assert value(after, "inferq_engine_slots", model="fake", state="free") == 2
    for state in ("validating", "queued", "running"):
        assert value(after, "inferq_batch_rows", state=state) == 0


def run_jobs(client: httpx.Client, server: Server) -> tuple[Samples, Samples]:
    """Scrape, run three sync chats (interactive), three queued jobs (async, one fails)
    and a slow one cancelled while it runs, then scrape again once every slot is free."""
    before = scrape(server)

    # three sync chats (interactive), two queued jobs (async), one that fails
    for _ in range(3):
        chat = {"model": "fake", "messages": [{"role": "user", "content": "one two three"}]}
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
    queued = []
    for content in ("four five", "six seven", FAIL_TRIGGER):
        body = {"model": "fake", "payload": {"messages": [{"role": "user", "content": content}]}}
        answer = client.post("/v1/queue/submit", json=body)
        assert answer.status_code == 200, answer.text
        queued.append(answer.json()["requestId"])
    # one slow job, cancelled while it runs
    words = " ".join(["word"] * 400)
    body = {"model": "slow", "payload": {"messages": [{"role": "user", "content": words}]}}
    slow = client.post("/v1/queue/submit", json=body).json()["requestId"]

    def status(request_id: str, model: str = "fake") -> str:
        params = {"request_id": request_id, "model": model}
        return str(client.get("/v1/queue/status", params=params).json()["status"])

    wait_until(lambda: all(status(r) in ("done", "failed") for r in queued), what="jobs end")
    wait_until(lambda: status(slow, "slow") == "running", what="slow job runs")
    during = scrape(server)
    assert value(during, "inferq_jobs_running", model="slow", **{"class": "async"}) == 1
    assert value(during, "inferq_engine_slots", model="slow", state="busy") == 1
    cancel = client.post("/v1/queue/cancel", json={"model": "slow", "request_id": slow})
    assert cancel.status_code == 200, cancel.text
    wait_until(
        lambda: value(scrape(server), "inferq_engine_slots", model="slow", state="free") == 1,
        what="the slow job's slot freed",
    )
    return before, scrape(server)


def test_the_dashboard_uses_only_metrics_the_server_exports(server: Server) -> None:
    dashboard = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"
    used = set(re.findall(r"\binferq_\w+", dashboard.read_text()))
    answer = httpx.get(f"{server.url}/metrics", headers=bearer(TOKEN), timeout=10)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    exported = {
        family.name + suffix
        for family in text_string_to_metric_families(answer.text)
        for suffix in suffixes.get(family.type, ("",))
    }
    assert used and used <= exported, used - exported
