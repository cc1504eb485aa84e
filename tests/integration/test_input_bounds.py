"""Client input a fuzzing pass found accepted where it should have been refused, or
refused under the wrong name, each kept as a regression.

Each case runs against a real server on SQLite and one on PostgreSQL (the fake engine):
bad input is a 4xx in the dialect's own shape naming the field, nothing is stored, and
the server still answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.hostile_target import served
from tests.support.server import Server
from tests.support.server_db import server_rows

pytestmark = pytest.mark.integration

MODELS = """\
[models.fake]
engine = "fake"
context_length = 512
slots = 2

[models.embed]
engine = "fake"
embedding = true
context_length = 512
slots = 1
"""
#: what a refused request must leave as it was
STORED = [
    "SELECT count(*) FROM jobs",
    "SELECT count(*) FROM batches",
    "SELECT count(*) FROM files",
]
#: an integer past 64 bits, as a string: Pydantic's lax mode reads it as a number
HUGE = "9999999999999999999999999"
#: past 32 bits (Fireworks' int32 fields), within 64
PAST_INT32 = str(2**31)
HELLO = [{"role": "user", "content": "hi"}]


@dataclass
class Target:
    server: Server
    schema: str | None
    http: httpx.Client

    def counts(self) -> list[list[tuple[Any, ...]]]:
        return server_rows(self.server.data_dir, self.schema, *STORED)

    def refused(self, response: httpx.Response, before: list[list[tuple[Any, ...]]]) -> None:
        """A 4xx that stored nothing, on a server that still answers."""
        assert 400 <= response.status_code < 500, f"{response.status_code} {response.text[:300]}"
        assert "Traceback" not in response.text
        assert self.counts() == before, "a refused request stored something"
        assert self.http.get("/healthz").status_code == 200


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    root = tmp_path_factory.mktemp(f"bounds-{request.param}")
    with served(root, request.param, models=MODELS, key_name="bounds") as (server, schema, http):
        yield Target(server, schema, http)


# -- integers past what a store or an engine keeps ---------------------------------------

CHAT = {"model": "fake", "messages": HELLO}
COMPLETION = {"model": "fake", "prompt": "hi"}
MESSAGE = {"model": "fake", "messages": HELLO, "max_tokens": 4}
RESPONSE = {"model": "fake", "input": "hi"}
EMBEDDING = {"model": "embed", "input": "hi"}
INFERA_CHAT = {"model": "fake", "messages": HELLO, "max_tokens": 4, "temperature": 0}

#: an OpenAI-shaped error naming ``param``
OPENAI = "openai"
#: Together's flat error naming ``param``
TOGETHER = "together"
#: FastAPI's 422 naming the field under ``body``
FASTAPI = "fastapi"
#: a message that names the field (Anthropic's and Fireworks' errors have no param)
MESSAGE_NAMES = "message"

#: (id, path, body, the field's name, how the error names it)
BIG_INTS: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("chat-seed", "/v1/chat/completions", {**CHAT, "seed": HUGE}, "seed", OPENAI),
    ("chat-top_k", "/v1/chat/completions", {**CHAT, "top_k": HUGE}, "top_k", OPENAI),
    ("chat-max_tokens", "/v1/chat/completions", {**CHAT, "max_tokens": HUGE}, "max_tokens", OPENAI),
    (
        "chat-max_completion_tokens",
        "/v1/chat/completions",
        {**CHAT, "max_completion_tokens": HUGE},
        "max_completion_tokens",
        OPENAI,
    ),
    ("completion-seed", "/v1/completions", {**COMPLETION, "seed": HUGE}, "seed", OPENAI),
    ("completion-top_k", "/v1/completions", {**COMPLETION, "top_k": HUGE}, "top_k", OPENAI),
    (
        "completion-max_tokens",
        "/v1/completions",
        {**COMPLETION, "max_tokens": HUGE},
        "max_tokens",
        OPENAI,
    ),
    (
        "response-max_output_tokens",
        "/v1/responses",
        {**RESPONSE, "max_output_tokens": HUGE},
        "max_output_tokens",
        OPENAI,
    ),
    (
        "embedding-dimensions",
        "/v1/embeddings",
        {**EMBEDDING, "dimensions": HUGE},
        "dimensions",
        OPENAI,
    ),
    (
        "together-seed",
        "/v1/queue/submit",
        {"model": "fake", "payload": {"messages": HELLO, "seed": HUGE}},
        "payload.seed",
        TOGETHER,
    ),
    (
        "together-top_k",
        "/v1/queue/submit",
        {"model": "fake", "payload": {"messages": HELLO, "top_k": HUGE}},
        "payload.top_k",
        TOGETHER,
    ),
    ("anthropic-top_k", "/v1/messages", {**MESSAGE, "top_k": HUGE}, "top_k", MESSAGE_NAMES),
    (
        "anthropic-max_tokens",
        "/v1/messages",
        {**MESSAGE, "max_tokens": HUGE},
        "max_tokens",
        MESSAGE_NAMES,
    ),
    (
        "infera-max_output",
        "/submit_job",
        {**CHAT, "max_output": HUGE, "temperature": 0},
        "max_output",
        FASTAPI,
    ),
    (
        "infera-request_timeout_time",
        "/chat/completions",
        {**INFERA_CHAT, "request_timeout_time": HUGE},
        "request_timeout_time",
        FASTAPI,
    ),
]


def _names_field(response: httpx.Response, field: str, how: str) -> None:
    body = response.json()
    if how == OPENAI:
        assert body["error"]["param"] == field, body
    elif how == TOGETHER:
        assert body["param"] == field, body
    elif how == FASTAPI:
        assert body["detail"][0]["loc"] == ["body", *field.split(".")], body
    else:
        text = body["error"]["message"] if "error" in body else body["message"]
        assert field in text, body


@pytest.mark.parametrize(
    ("path", "body", "field", "how"),
    [case[1:] for case in BIG_INTS],
    ids=[case[0] for case in BIG_INTS],
)
def test_an_integer_past_64_bits_sent_as_a_string_is_refused(
    target: Target, path: str, body: dict[str, Any], field: str, how: str
) -> None:
    """Found: ``"seed": "9999999999999999999999999"`` (and the other integer sampling
    parameters) read by Pydantic as an integer past 64 bits, and the job stored."""
    before = target.counts()
    response = target.http.post(path, json=body)
    target.refused(response, before)
    _names_field(response, field, how)


def test_a_seed_of_64_bits_is_still_accepted(target: Target) -> None:
    """The bounds are the store's (signed 64-bit), not narrower: OpenAI documents seed so."""
    for seed in (str(-(2**63)), str(2**63 - 1)):
        response = target.http.post(
            "/v1/chat/completions", json={**CHAT, "seed": seed, "max_tokens": 2}
        )
        assert response.status_code == 200, response.text


FIREWORKS_JOB = {"model": "fake", "inputDatasetId": "no-such-dataset"}


@pytest.mark.parametrize("field", ["topK", "maxTokens", "n"])
def test_fireworks_int32_inference_parameters_are_bounded(target: Target, field: str) -> None:
    """Fireworks documents ``maxTokens``, ``topK`` and ``n`` as int32: a larger one is a
    400 naming it, before anything is looked up or stored."""
    before = target.counts()
    response = target.http.post(
        "/v1/accounts/acme/batchInferenceJobs",
        json={**FIREWORKS_JOB, "inferenceParameters": {field: PAST_INT32}},
    )
    target.refused(response, before)
    assert response.status_code == 400, response.text
    assert field in response.json()["message"], response.text


def test_fireworks_example_count_past_int64_is_refused(target: Target) -> None:
    """Found: ``dataset.exampleCount`` (an int64, a string in proto3 JSON) past 64 bits was
    stored in the dataset's record."""
    before = target.counts()
    response = target.http.post(
        "/v1/accounts/acme/datasets",
        json={"datasetId": "big-count", "dataset": {"exampleCount": HUGE}},
    )
    target.refused(response, before)
    assert response.status_code == 400, response.text
    assert "exampleCount" in response.json()["message"], response.text


# -- Infera's max_output -----------------------------------------------------------------


def test_infera_max_output_zero_is_no_limit_and_negative_is_refused(target: Target) -> None:
    """``max_output: 0`` is "no limit" (README; a public client sends it): accepted.
    Below 0 is refused in Infera's 422 shape, naming ``max_output``."""
    job = {**CHAT, "temperature": 0}
    accepted = target.http.post("/submit_job", json={**job, "max_output": 0})
    assert accepted.status_code == 200, accepted.text
    before = target.counts()
    response = target.http.post("/submit_job", json={**job, "max_output": -1})
    target.refused(response, before)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "max_output"]


# -- OpenAI's list cursors -----------------------------------------------------------------


def _upload(target: Target) -> str:
    response = target.http.post(
        "/v1/files",
        data={"purpose": "batch"},
        files={"file": ("rows.jsonl", b"{}\n", "application/jsonl")},
    )
    assert response.status_code == 200, response.text
    file_id = response.json()["id"]
    assert isinstance(file_id, str)
    return file_id


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_a_files_cursor_that_names_no_file_is_an_empty_page(target: Target, order: str) -> None:
    """Found: ``GET /v1/files?order=asc&after=<garbage>`` ignored the cursor and listed
    every file. An ``after`` that names no file is an empty page, as for ``order=desc``
    and ``GET /v1/batches`` (the store's listings: "none when that record does not
    exist")."""
    _upload(target)
    page = target.http.get("/v1/files", params={"order": order, "after": "file-garbage"})
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["data"] == [] and body["has_more"] is False, body
    batches = target.http.get("/v1/batches", params={"after": "batch_garbage"})
    assert batches.status_code == 200 and batches.json()["data"] == [], batches.text


def test_a_files_cursor_pages_oldest_first_across_purposes(target: Target) -> None:
    """``after`` names a file of another purpose than the one listed: the page holds the
    listed purpose's files newer than it (the cursor is a place, not a member)."""
    first = _upload(target)
    other = target.http.post(
        "/v1/files",
        data={"purpose": "user_data"},
        files={"file": ("notes.txt", b"x", "text/plain")},
    )
    assert other.status_code == 200, other.text
    last = _upload(target)
    page = target.http.get(
        "/v1/files", params={"order": "asc", "after": other.json()["id"], "purpose": "batch"}
    )
    assert page.status_code == 200, page.text
    ids = [f["id"] for f in page.json()["data"]]
    assert ids == [last] and first not in ids, ids


# -- Unstructured's query parameters -------------------------------------------------------


def test_a_bad_workflow_status_filter_is_located_in_the_query(target: Target) -> None:
    """Found: ``GET /api/v1/jobs/?status=bogus`` answered a 422 at ``["body", "status"]``;
    ``status`` is a query parameter."""
    response = target.http.get("/api/v1/jobs/", params={"status": "bogus"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["query", "status"], detail
    assert "bogus" in detail[0]["msg"]
    listed = target.http.get("/api/v1/jobs/", params={"status": " Completed "})
    assert listed.status_code == 200 and listed.json() == [], listed.text
