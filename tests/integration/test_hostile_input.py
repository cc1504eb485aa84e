"""Hostile input at every write endpoint: never a 5xx, nothing half-stored, the server fine.

Hypothesis puts hostile values (lone surrogates, NULs, numbers past every column's
range, NaN and Infinity, JSON nested thousands deep, path tricks) into otherwise valid
requests of every dialect's write endpoints, one value at a time, anywhere in the
body: in place of a field, inside a free-form object, or as an extra key. Ids in
paths and query strings get the same treatment. Two real servers run the matrix,
one on SQLite and one on PostgreSQL (the fake engine, so accepted work ends fast).

What must hold for every request:

* the answer is not a 5xx, and a 4xx carries the dialect's error shape;
* a refused write stores nothing: the tenant's jobs, batches and files are counted
  in the database before and after;
* afterwards the server still answers, every job it accepted can be read back and
  runs to an end (a stored value that could not be read back or run would show here).

``ENDPOINTS`` must name every write route of the app (a test checks it against the
routes), so a new endpoint gets the hostile strategies as soon as it exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.acceptance.cluster import schema_url
from tests.integration.helpers import start_server, wait_until
from tests.support.postgres import database_url
from tests.support.server import Server

pytestmark = pytest.mark.integration

MODEL = "fake"
EMBED = "fake-embed"
MODELS = f"""\
[models.{MODEL}]
engine = "fake"
context_length = 512
slots = 2

[models.{EMBED}]
engine = "fake"
embedding = true
context_length = 512
slots = 2
"""
TENANT = "hostile"
HELLO = [{"role": "user", "content": "Say hello."}]
CHAT = '{"model":"fake","messages":[{"role":"user","content":"Say hello."}],"max_tokens":4}'
DATASETS = "/v1/accounts/hostile/datasets"
JOBS = "/v1/accounts/hostile/batchInferenceJobs"


# -- hostile values -------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: what ``json.dumps`` refuses to write."""

    text: str


def deep(levels: int, *, obj: bool = False) -> Raw:
    opening, closing = ('{"a":', "}") if obj else ("[", "]")
    return Raw(opening * levels + "0" + closing * levels)


SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
HOSTILE_TEXT = st.one_of(
    st.sampled_from(
        [
            "\ud800",
            "\udfff",
            "a\ud83d",  # the first half of a pair, alone
            "\x00",
            "a\x00b",
            "../x",
            "../../etc/passwd",
            "é/ü\u202e",
            "x" * 5000,
            "%00",
            "\r\nX-Injected: 1",
        ]
    ),
    st.lists(st.one_of(SURROGATES, st.just("\x00"), st.characters()), min_size=1, max_size=8).map(
        "".join
    ),
)
HOSTILE_NUMBER = st.one_of(
    st.sampled_from(
        [
            2**31,
            -(2**31) - 1,
            2**63,
            -(2**63) - 1,
            2**64,
            10**30,
            math.nan,
            math.inf,
            -math.inf,
            Raw("1e999"),
            Raw("-1e999"),
            Raw("1" * 5000),
            -1,
            0,
        ]
    ),
    st.integers(),
    st.floats(),
)
HOSTILE_NESTING = st.one_of(
    st.integers(65, 5000).map(deep),
    st.integers(65, 2000).map(lambda n: deep(n, obj=True)),
)
HOSTILE = st.one_of(HOSTILE_TEXT, HOSTILE_NUMBER, HOSTILE_NESTING, st.booleans(), st.none())


def dumps(value: Any) -> str:
    """JSON text of ``value``, writing Raw as it is and NaN/Infinity as tokens."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    # ensure_ascii writes a lone surrogate as its escape, which is what a client sends
    return json.dumps(value, allow_nan=True)


# -- the endpoints ----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    route: str
    #: a valid body (JSON), or None for a multipart or raw-bytes route
    body: Any = None
    #: the concrete path to send to, when the route has parameters
    path: str | None = None
    #: form fields of a multipart route, sent with one small file
    form: dict[str, str] | None = None


def batch_line(n: int) -> bytes:
    line = {
        "custom_id": f"r{n}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": HELLO, "max_tokens": 4},
    }
    return (json.dumps(line) + "\n").encode()


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/queue/submit",
        {
            "model": MODEL,
            "priority": 1,
            "info": {"user": "u1", "tags": ["a"]},
            "payload": {"messages": HELLO, "max_tokens": 4, "temperature": 0.5},
        },
    ),
    Endpoint("POST", "/v1/queue/cancel", {"model": MODEL, "request_id": "no-such-job"}),
    Endpoint("POST", "/v1/queue/clear", {"model": MODEL}),
    Endpoint(
        "POST",
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": HELLO,
            "max_tokens": 4,
            "priority": 2,
            "timeout": 30,
            "stop": ["x"],
            "metadata": {"k": "v"},
        },
    ),
    Endpoint("POST", "/v1/embeddings", {"model": EMBED, "input": ["a", "b"], "priority": 1}),
    Endpoint(
        "POST",
        "/v1/responses",
        {
            "model": MODEL,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi."}]}],
            "instructions": "Be brief.",
            "max_output_tokens": 4,
            "background": True,
            "metadata": {"k": "v"},
            "text": {"format": {"type": "text"}},
        },
    ),
    Endpoint(
        "POST",
        "/v1/responses/{response_id}/cancel",
        {},
        path="/v1/responses/resp_0123456789abcdef0123456789abcdef/cancel",
    ),
    Endpoint(
        "POST",
        "/v1/messages",
        {
            "model": MODEL,
            "max_tokens": 4,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
            "stop_sequences": ["x"],
            "temperature": 0.5,
            "top_k": 2,
            "metadata": {"user_id": "u1"},
        },
    ),
    Endpoint(
        "POST",
        "/v1/messages/count_tokens",
        {
            "model": MODEL,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Say hello."}],
            "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
        },
    ),
    # every request is checked before the batch exists, the model last: a model that does
    # not exist keeps the body refused, so no batch's rows arrive in the background while
    # another case counts what a refused request stored
    Endpoint(
        "POST",
        "/v1/messages/batches",
        {
            "requests": [
                {
                    "custom_id": "a",
                    "params": {"model": "none", "max_tokens": 4, "messages": HELLO},
                }
            ]
        },
    ),
    Endpoint(
        "POST",
        "/v1/messages/batches/{batch_id}/cancel",
        {},
        path="/v1/messages/batches/msgbatch_none/cancel",
    ),
    Endpoint(
        "POST",
        "/v1/batches",
        {
            "input_file_id": "file-none",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"k": "v"},
        },
    ),
    Endpoint("POST", "/v1/batches/{batch_id}/cancel", {}, path="/v1/batches/batch_none/cancel"),
    Endpoint("POST", "/v1/files", form={"purpose": "batch"}),
    Endpoint(
        "POST",
        "/submit_job",
        {"model": MODEL, "messages": HELLO, "max_output": 4, "temperature": 0.5},
    ),
    Endpoint(
        "POST",
        "/chat/completions",
        {
            "model": MODEL,
            "messages": HELLO,
            "max_tokens": 4,
            "temperature": 0.5,
            "request_timeout_time": 30,
        },
    ),
    Endpoint(
        "POST",
        "/v1/accounts/{account_id}/datasets",
        {"datasetId": "ds-hostile", "dataset": {"displayName": "d", "exampleCount": "1"}},
        path=DATASETS,
    ),
    Endpoint(
        "POST",
        "/v1/accounts/{account_id}/datasets/{dataset_id}:upload",
        path=DATASETS + "/ds-none:upload",
        form={},
    ),
    Endpoint(
        "POST",
        "/v1/accounts/{account_id}/datasets/{dataset_id}:getUploadEndpoint",
        {"filenameToSize": {"a.jsonl": "10"}},
        path=DATASETS + "/ds-none:getUploadEndpoint",
    ),
    Endpoint(
        "POST",
        "/v1/accounts/{account_id}/datasets/{dataset_id}:validateUpload",
        {},
        path=DATASETS + "/ds-none:validateUpload",
    ),
    Endpoint(
        "PATCH",
        "/v1/accounts/{account_id}/datasets/{dataset_id}",
        {"displayName": "d", "exampleCount": "2"},
        path=DATASETS + "/ds-none",
    ),
    Endpoint(
        "POST",
        "/v1/accounts/{account_id}/batchInferenceJobs",
        {
            "model": MODEL,
            "inputDatasetId": "ds-none",
            "outputDatasetId": "ds-out",
            "displayName": "j",
            "inferenceParameters": {"maxTokens": 4, "extraBody": '{"top_k": 2}'},
        },
        path=JOBS,
    ),
    Endpoint("PUT", "/v1/uploads/{token}", path="/v1/uploads/bad.token"),
    Endpoint("POST", "/api/v1/jobs/", form={"request_data": '{"template_id": "none"}'}),
    Endpoint("POST", "/api/v1/jobs/{job_id}/cancel", {}, path="/api/v1/jobs/none/cancel"),
]
BY_ROUTE = {(e.method, e.route): e for e in ENDPOINTS}
JSON_ENDPOINTS = [e for e in ENDPOINTS if e.body is not None]
FORM_ENDPOINTS = [e for e in ENDPOINTS if e.form is not None]
#: routes with ids, each reached with a hostile id in its path
READ_PATHS = [
    "/v1/queue/status?request_id={id}&model=" + MODEL,
    "/v1/batches/{id}",
    "/v1/files/{id}",
    "/v1/files/{id}/content",
    "/get_result/{id}",
    "/get_completion_time/{id}",
    DATASETS + "/{id}",
    JOBS + "/{id}",
    "/api/v1/jobs/{id}",
    "/api/v1/jobs/{id}/download?file_id={id}&node_id={id}",
    "/api/v1/templates/{id}",
    "/v1/downloads/{id}",
    "/v1/models/{id}",
    "/v1/batches?limit={id}&after={id}",
    "/v1/messages/batches/{id}",
    "/v1/messages/batches/{id}/results",
    "/v1/messages/batches?limit={id}&after_id={id}",
    "/v1/messages/batches?before_id={id}",
    "/v1/files?limit={id}&after={id}&purpose={id}",
    "/v1/responses/{id}",
    "/v1/responses/{id}?stream=true&starting_after={id}",
    "/v1/responses/{id}/input_items?limit={id}&after={id}&order={id}",
]
HOSTILE_IDS = [
    "%00",
    "a%00b",
    "%ED%A0%80",  # a surrogate, UTF-8 encoded: not valid UTF-8
    "%FF%FE",
    quote("é"),
    "x" * 3000,
    "..%2F..%2Fetc%2Fpasswd",
    "9223372036854775808",
    "-1",
    quote("e30.é"),  # a signed-URL token whose signature is not ASCII
    quote("e30.\u00ff\u00fe"),
]


def locations(value: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in ``value`` a hostile value can go (its leaves and containers)."""
    yield here
    if isinstance(value, dict):
        for key, child in value.items():
            yield from locations(child, (*here, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from locations(child, (*here, index))


def put(value: Any, where: tuple[Any, ...], new: Any, *, as_key: bool) -> Any:
    if not where:
        if as_key and isinstance(value, dict):
            return {**value, "hostile": new}
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[where[0]] = put(value[where[0]], where[1:], new, as_key=as_key)
    return copy


@st.composite
def hostile_body(draw: st.DrawFn, endpoint: Endpoint) -> str:
    where = draw(st.sampled_from(list(locations(endpoint.body))))
    value = draw(HOSTILE)
    as_key = draw(st.booleans())
    if as_key and draw(st.booleans()):
        # the hostile text as a key instead of a value
        target: Any = endpoint.body
        for step in where:
            target = target[step]
        if isinstance(target, dict) and isinstance(value, str):
            key_text = dumps(value)
            inner = dumps(target)[1:]
            raw = Raw("{" + key_text + ":1" + ("," + inner if inner != "}" else "}"))
            return dumps(put(endpoint.body, where, raw, as_key=False))
    return dumps(put(endpoint.body, where, value, as_key=as_key))


# -- the servers ------------------------------------------------------------------------


class Target:
    """A server and a way to count what its database holds of the tenant."""

    def __init__(self, server: Server, *, schema: str | None) -> None:
        self.server = server
        self.schema = schema
        self.key = server.create_key("hostile-key", TENANT)
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    def close(self) -> None:
        self.http.close()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` in the server's own database (read-only on SQLite)."""
        if self.schema is None:
            db = self.server.data_dir / "inferq.db"
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                return [tuple(row) for row in conn.execute(sql).fetchall()]
            finally:
                conn.close()

        async def fetch() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(
                database_url(), server_settings={"search_path": self.schema or ""}
            )
            try:
                return [tuple(row) for row in await conn.fetch(sql)]
            finally:
                await conn.close()

        return asyncio.run(fetch())

    def counts(self) -> tuple[int, ...]:
        """How many jobs, batches and files the database holds."""
        return tuple(
            self.query(f"SELECT count(*) FROM {table}")[0][0]
            for table in ("jobs", "batches", "files")
        )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    root = tmp_path_factory.mktemp(f"hostile-{request.param}")
    if request.param == "sqlite":
        server = start_server(root, models=MODELS, env={"INFERQ_MAX_BODY_BYTES": "200000"})
        try:
            with contextlib.closing(Target(server, schema=None)) as sqlite_target:
                yield sqlite_target
        finally:
            server.stop()
        return
    schema = "t_" + uuid.uuid4().hex[:12]
    asyncio.run(sql(f"CREATE SCHEMA {schema}"))
    try:
        server = start_server(
            root,
            models=MODELS,
            env={"INFERQ_DATABASE_URL": schema_url(schema), "INFERQ_MAX_BODY_BYTES": "200000"},
        )
        try:
            with contextlib.closing(Target(server, schema=schema)) as postgres_target:
                yield postgres_target
        finally:
            server.stop()
    finally:
        asyncio.run(sql(f"DROP SCHEMA {schema} CASCADE"))


async def sql(statement: str) -> None:
    conn = await asyncpg.connect(database_url())
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def check_answer(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        body = response.json()  # every error is JSON in the dialect's shape
        assert isinstance(body, dict) and body, f"{what}: {response.text[:300]}"
        text = json.dumps(body)
        # neither the database's own words nor a traceback reach the client
        for leak in ("asyncpg", "sqlite3", "Traceback", "invalid byte sequence", "psycopg"):
            assert leak not in text, f"{what}: {text[:500]}"


HYPOTHESIS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=lambda e: f"{e.method} {e.route}")
def test_hostile_json_bodies(target: Target, endpoint: Endpoint) -> None:
    @HYPOTHESIS
    @given(body=hostile_body(endpoint))
    def run(body: str) -> None:
        before = target.counts()
        response = target.http.request(
            endpoint.method,
            endpoint.path or endpoint.route,
            content=body.encode("utf-8", "surrogatepass"),
            headers={"Content-Type": "application/json"},
        )
        check_answer(response, f"{endpoint.method} {endpoint.route} {body[:200]!r}")
        if response.status_code >= 400:
            assert target.counts() == before, f"a refused request stored something: {body[:200]!r}"

    run()


#: each defect an audit of the service found, as the request that showed it
KNOWN = [
    ("/v1/queue/submit", '{"model":"fake","priority":9223372036854775808,"payload":{}}'),
    ("/v1/queue/submit", '{"model":"fake","priority":2147483648,"payload":{}}'),
    ("/v1/chat/completions", CHAT[:-1] + ',"priority":2147483648}'),
    ("/v1/embeddings", '{"model":"fake-embed","input":"a","priority":-2147483649}'),
    ("/v1/chat/completions", CHAT.replace("Say hello.", "\\ud800")),
    ("/v1/queue/submit", '{"model":"fake","info":{"u":"\\udfff"},"payload":{}}'),
    ("/v1/queue/submit", '{"model":"fake","info":{"u":"a\\u0000"},"payload":{}}'),
    ("/v1/chat/completions", CHAT.replace("Say hello.", "a\\u0000b")),
    ("/v1/queue/submit", '{"model":"fake","info":{"x":NaN},"payload":{}}'),
    ("/v1/queue/submit", '{"model":"fake","info":{"x":Infinity},"payload":{}}'),
    ("/submit_job", '{"model":"fake","messages":[],"max_output":4,"temperature":NaN}'),
    ("/v1/queue/submit", '{"model":"fake","info":' + deep(900, obj=True).text + ',"payload":{}}'),
    ("/v1/queue/cancel", '{"model":"fake","request_id":"\\u0000"}'),
]


@pytest.mark.parametrize(("path", "body"), KNOWN, ids=[f"{p} {b[:60]}" for p, b in KNOWN])
def test_known_defects_are_client_errors(target: Target, path: str, body: str) -> None:
    before = target.counts()
    response = target.http.post(
        path, content=body.encode(), headers={"Content-Type": "application/json"}
    )
    check_answer(response, f"{path} {body[:100]}")
    assert 400 <= response.status_code < 500, response.text
    assert target.counts() == before


def test_deep_json_inside_string_fields(target: Target) -> None:
    nested = "[" * 5000 + "]" * 5000
    job = dict(BY_ROUTE[("POST", "/v1/accounts/{account_id}/batchInferenceJobs")].body)
    job["inferenceParameters"] = {"maxTokens": 4, "extraBody": nested}
    response = target.http.post(JOBS, json=job)
    check_answer(response, "extraBody")
    assert response.status_code == 400 and "extraBody" in response.text
    boundary = "b0undary"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="request_data"\r\n\r\n'
        f"{nested}\r\n--{boundary}--\r\n"
    )
    response = target.http.post(
        "/api/v1/jobs/",
        content=form.encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    check_answer(response, "request_data")
    assert 400 <= response.status_code < 500 and "request_data" in response.text


@pytest.mark.parametrize("endpoint", FORM_ENDPOINTS, ids=lambda e: f"{e.method} {e.route}")
def test_hostile_form_fields(target: Target, endpoint: Endpoint) -> None:
    assert endpoint.form is not None
    fields = [*endpoint.form, "filename"]

    @HYPOTHESIS
    @given(field=st.sampled_from(fields), value=HOSTILE_TEXT)
    def run(field: str, value: str) -> None:
        form = dict(endpoint.form or {})
        filename = "rows.jsonl"
        if field == "filename":
            filename = value
        else:
            form[field] = value
        before = target.counts()
        # encoded by hand: a lone surrogate is sent as the bytes a careless client sends
        boundary = "hostileboundary"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in form.items()
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        body = "".join(parts).encode("utf-8", "surrogatepass") + batch_line(1)
        body += f"\r\n--{boundary}--\r\n".encode()
        response = target.http.request(
            endpoint.method,
            endpoint.path or endpoint.route,
            content=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        check_answer(response, f"{endpoint.route} {field}={value[:100]!r}")
        if response.status_code >= 400:
            assert target.counts() == before

    run()


@pytest.mark.parametrize("template", READ_PATHS)
def test_hostile_ids_in_paths_and_queries(target: Target, template: str) -> None:
    for hostile in HOSTILE_IDS:
        path = template.replace("{id}", hostile)
        for method in ("GET", "DELETE") if "?" not in template else ("GET",):
            response = target.http.request(method, path)
            check_answer(response, f"{method} {path[:200]}")


def test_raw_bytes_upload_with_hostile_token(target: Target) -> None:
    for hostile in HOSTILE_IDS:
        response = target.http.put(f"/v1/uploads/{hostile}", content=b"x")
        check_answer(response, f"PUT /v1/uploads/{hostile[:100]}")


def test_accepted_work_reads_back_and_ends(target: Target) -> None:
    """Runs after the matrix (tests run in file order): whatever was accepted is readable
    and runs to an end, on a server that still answers."""
    assert target.server.proc is not None and target.server.proc.poll() is None
    assert httpx.get(target.server.url + "/healthz", timeout=5).status_code == 200
    wait_until(
        lambda: (
            not target.query(
                "SELECT id FROM jobs WHERE state IN ('queued', 'running') AND batch_id IS NULL"
            )
        ),
        timeout=120,
        interval=0.5,
        what="accepted hostile jobs to end",
    )
    jobs = target.query("SELECT id, model, state, error FROM jobs WHERE batch_id IS NULL")
    assert jobs, "the matrix got no job accepted: its valid bodies are wrong"
    lost = [job for job in jobs if job[3] and "worker_lost" in str(job[3])]
    assert not lost, f"jobs that could not be run: {lost[:5]}"
    for job_id, model, _, _ in jobs[:300]:
        response = target.http.get(
            "/v1/queue/status", params={"request_id": job_id, "model": model}
        )
        check_answer(response, f"status of {job_id}")
        assert response.status_code == 200, response.text


def test_every_write_route_is_in_the_matrix() -> None:
    """A new write endpoint must be added to ENDPOINTS, so it gets the hostile inputs."""
    from inferq.api.app import create_app
    from inferq.config import Settings

    app = create_app(Settings(data_dir=Path("/nonexistent")))
    writes = {
        (method, route.path)
        for route in app.routes
        for method in getattr(route, "methods", set()) or set()
        if method in ("POST", "PUT", "PATCH")
    }
    missing = writes - set(BY_ROUTE)
    assert not missing, f"write routes without hostile-input cases: {sorted(missing)}"
