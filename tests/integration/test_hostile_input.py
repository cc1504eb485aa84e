"""Hostile input at every write endpoint: never a 5xx, nothing half-stored, the server fine.

Hypothesis puts hostile values (lone surrogates, NULs, numbers past every column's
range, NaN and Infinity, JSON nested thousands deep, path tricks) into otherwise valid
requests of every dialect's write endpoints, one value at a time, anywhere in the
body: in place of a field, inside a free-form object, or as an extra key. Ids in
paths and query strings get the same treatment. Each route is called as its callers
call it: the tenant's API key, an admin key (``/admin``), a node token (the node
protocol and Infera's node endpoints, also on a job the node really holds), or an
admin's console session with its CSRF token (the console's forms, urlencoded). Two
real servers run the matrix, one on SQLite and one on PostgreSQL (the fake engine,
so accepted work ends fast).

What must hold for every request:

* the answer is not a 5xx, and a 4xx carries the dialect's error shape (the
  console's: an HTML page);
* a refused write stores nothing: the jobs, batches, files, webhook endpoints, keys
  and nodes are read from the database before and after (:data:`STORED`);
* afterwards the server still answers, every job it accepted can be read back and
  runs to an end (a stored value that could not be read back or run would show here).

``ENDPOINTS`` must name every write route of the app (a test checks it against the
routes, included routers flattened, and each DELETE against the hostile ids), so a new
endpoint gets the hostile strategies as soon as it exists.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.acceptance.cluster import schema_url
from tests.integration.helpers import start_server, wait_until
from tests.support.postgres import server_schema
from tests.support.server import Server
from tests.support.server_db import server_rows

pytestmark = pytest.mark.integration

MODEL = "fake"
EMBED = "fake-embed"
#: a chat model that nodes serve (no node runs it: nothing is ever claimed)
REMOTE = "remote"
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

[models.{REMOTE}]
engine = "remote"
context_length = 512
"""
TENANT = "hostile"
HELLO = [{"role": "user", "content": "Say hello."}]
CHAT = '{"model":"fake","messages":[{"role":"user","content":"Say hello."}],"max_tokens":4}'
DATASETS = "/v1/accounts/hostile/datasets"
JOBS = "/v1/accounts/hostile/batchInferenceJobs"
#: the node process the matrix speaks the node protocol as
SESSION = "hostile-session"
#: a node's result of a chat job
CHAT_RESULT = {
    "text": "hi",
    "finish_reason": "stop",
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "cached_tokens": 0},
}
#: stands for the console session's CSRF token in a form
CSRF = "<csrf>"


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
    #: who calls it: "key" (the tenant's API key), "admin" (an admin key), "node" (a node
    #: token), "console" (a console session and its CSRF token: ``fields`` is its form)
    caller: str = "key"
    #: the fields of a console form (urlencoded; CSRF stands for the session's token)
    fields: dict[str, str] | None = None


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
    # the fake engine serves chat only: every completion is refused at its model, after the
    # body and its prompts are checked
    Endpoint(
        "POST",
        "/v1/completions",
        {
            "model": MODEL,
            "prompt": ["Say", "hello"],
            "max_tokens": 4,
            "temperature": 0.5,
            "stop": ["x"],
            "logprobs": 1,
            "priority": 1,
            "timeout": 30,
        },
    ),
    # a tenant nobody works for: no delivery is ever due to the endpoints it gets
    Endpoint(
        "POST",
        "/admin/webhooks",
        {"tenant": "hostile-hooks", "url": "http://127.0.0.1:9/hook", "events": ["job.failed"]},
        caller="admin",
    ),
    # the node protocol: no job is ever the node's, so every fenced call is a 404 at most;
    # free slots of 0 (and a wait of 0) keep each claim from waiting
    Endpoint(
        "POST",
        "/node/v1/hello",
        {"protocol": 1, "session": SESSION, "version": "1.0", "models": {REMOTE: 2}},
        caller="node",
    ),
    Endpoint(
        "POST",
        "/node/v1/claim",
        {"session": SESSION, "free": {REMOTE: 0}, "wait": 0, "running": 0, "max_class": "batch"},
        caller="node",
    ),
    Endpoint(
        "POST",
        "/node/v1/heartbeat",
        {
            "session": SESSION,
            "jobs": [
                {"id": "none", "attempt": 1, "info": {"k": "v"}, "progress": 0.5, "text": ["a"]}
            ],
        },
        caller="node",
    ),
    Endpoint(
        "POST",
        "/node/v1/complete",
        {
            "session": SESSION,
            "id": "none",
            "attempt": 1,
            "result": CHAT_RESULT,
            "text": ["a"],
            "info": {"k": "v"},
        },
        caller="node",
    ),
    Endpoint(
        "POST",
        "/node/v1/fail",
        {
            "session": SESSION,
            "id": "none",
            "attempt": 1,
            "error": {"code": "x", "message": "y"},
            "retry": False,
            "info": {"k": "v"},
        },
        caller="node",
    ),
    Endpoint(
        "POST",
        "/node/v1/results",
        {
            "session": SESSION,
            "results": [
                {"id": "none", "attempt": 1, "result": CHAT_RESULT, "text": ["a"]},
                {"id": "none2", "attempt": 2, "error": {"code": "x", "message": "y"}},
            ],
            "free": {REMOTE: 0},
            "running": 0,
        },
        caller="node",
    ),
    Endpoint(
        "POST",
        "/node/v1/release",
        {"session": SESSION, "jobs": [{"id": "none", "attempt": 1}]},
        caller="node",
    ),
    Endpoint("POST", "/node/v1/bye", {"session": SESSION}, caller="node"),
    Endpoint(
        "PUT",
        "/node/v1/jobs/{job_id}/files/{name}",
        path=f"/node/v1/jobs/none/files/out.png?session={SESSION}&attempt=1",
        caller="node",
    ),
    # Infera's node endpoints
    Endpoint("POST", "/register_node_secret", {}, caller="node"),
    Endpoint("POST", "/check_node_secret", {}, caller="node"),
    Endpoint(
        "POST",
        "/worker/register_node",
        {"node_url": "http://127.0.0.1:9", "node_version": "1.0"},
        caller="node",
    ),
    Endpoint("POST", "/worker/update_models", {"models": [REMOTE]}, caller="node"),
    Endpoint("POST", "/worker/deregister_node", {}, caller="node"),
    Endpoint(
        "POST",
        "/worker/update_result",
        {
            "job_id": "none",
            "api_key": "iqn-none",
            "model_name": REMOTE,
            "result": {"message": {"role": "assistant", "content": "hi"}, "eval_count": 1},
            "status": "completed",
        },
        caller="node",
    ),
    # the console's forms, as an admin's browser posts them
    Endpoint(
        "POST",
        "/console/login",
        caller="console",
        fields={"key": "<admin key>", "next": "/console/jobs"},
    ),
    Endpoint("POST", "/console/logout", caller="console", fields={"csrf": CSRF}),
    Endpoint(
        "POST",
        "/console/keys",
        caller="console",
        fields={"csrf": CSRF, "name": "console-key", "tenant": "hostile-console", "admin": ""},
    ),
    Endpoint(
        "POST",
        "/console/keys/{key_id}/revoke",
        path="/console/keys/{}/revoke",
        caller="console",
        fields={"csrf": CSRF},
    ),
    Endpoint(
        "POST",
        "/console/nodes/{node_id}/revoke",
        path="/console/nodes/{}/revoke",
        caller="console",
        fields={"csrf": CSRF},
    ),
    Endpoint(
        "POST",
        "/console/jobs/{job_id}/cancel",
        path="/console/jobs/{}/cancel",
        caller="console",
        fields={"csrf": CSRF},
    ),
    Endpoint(
        "POST",
        "/console/batches/{batch_id}/cancel",
        path="/console/batches/{}/cancel",
        caller="console",
        fields={"csrf": CSRF},
    ),
    Endpoint(
        "POST", "/console/{rest:path}", path="/console/{}", caller="console", fields={"csrf": CSRF}
    ),
]
BY_ROUTE = {(e.method, e.route): e for e in ENDPOINTS}
JSON_ENDPOINTS = [e for e in ENDPOINTS if e.body is not None]
FORM_ENDPOINTS = [e for e in ENDPOINTS if e.form is not None]
CONSOLE_ENDPOINTS = [e for e in ENDPOINTS if e.fields is not None]
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
    "/v1/outputs/{id}/{id}",
]
#: the same with an admin key
ADMIN_PATHS = [
    "/admin/webhooks/{id}",
    "/admin/webhooks/{id}/deliveries?limit={id}",
    "/admin/webhooks?tenant={id}",
]
ID_PATHS = [("key", path) for path in READ_PATHS] + [("admin", path) for path in ADMIN_PATHS]
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


#: what a refused request must leave as it was: the rows it could add, and what the
#: routes that change a row (revoking, a node's hello) change
STORED = [
    "SELECT count(*) FROM jobs",
    "SELECT count(*) FROM batches",
    "SELECT count(*) FROM files",
    "SELECT count(*) FROM webhook_endpoints",
    "SELECT name, revoked_at FROM api_keys ORDER BY name",
    "SELECT name, revoked_at, version, CAST(models AS TEXT) FROM nodes ORDER BY name",
]


class Target:
    """A server, its callers (the tenant's key, an admin key, a node, a console session)
    and a way to read what its database holds."""

    def __init__(self, server: Server, *, schema: str | None) -> None:
        self.server = server
        self.schema = schema
        self.admin_key = server.admin_key()
        self.key = server.create_key("hostile-key", TENANT)
        self.node_token = server.cli("nodes", "create", "--name", "hostile-node").split()[-1]
        self.clients = {
            caller: httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
            )
            for caller, secret in (
                ("key", self.key),
                ("admin", self.admin_key),
                ("node", self.node_token),
            )
        }
        self.http = self.clients["key"]
        self.console = httpx.Client(base_url=server.url, timeout=30)
        self.csrf = ""
        hello = BY_ROUTE[("POST", "/node/v1/hello")]
        assert self.clients["node"].post(hello.route, json=hello.body).status_code == 200

    def close(self) -> None:
        for client in (*self.clients.values(), self.console):
            client.close()

    def log_in(self) -> None:
        """A new console session for the admin key, and its CSRF token."""
        self.console.cookies.clear()
        answer = self.console.post("/console/login", data={"key": self.admin_key})
        assert answer.status_code == 303, answer.text
        answer = self.console.get("/console/queues")
        match = re.search(r'name="csrf" value="([^"]+)"', answer.text)
        assert match, answer.text
        self.csrf = match.group(1)

    def form(self, endpoint: Endpoint) -> tuple[str, dict[str, str]]:
        """The path and the valid fields of a console form, in the current session."""
        secrets = {CSRF: self.csrf, "<admin key>": self.admin_key}
        fields = {name: secrets.get(text, text) for name, text in (endpoint.fields or {}).items()}
        return (endpoint.path or endpoint.route).replace("{}", "none"), fields

    def query(self, *statements: str) -> list[list[tuple[Any, ...]]]:
        """Rows of each statement in the server's own database (read-only on SQLite)."""
        return server_rows(self.server.data_dir, self.schema, *statements)

    def counts(self) -> list[list[tuple[Any, ...]]]:
        """What a refused request must not change (:data:`STORED`)."""
        return self.query(*STORED)


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
    with server_schema() as schema:
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


def test_the_matrix_callers_are_let_in(target: Target) -> None:
    """Each route's valid request passes its credentials (a refused key or CSRF token
    would make every hostile case a vacuous 401 or 403)."""
    answers = {}
    for endpoint in JSON_ENDPOINTS:
        response = target.clients[endpoint.caller].request(
            endpoint.method, endpoint.path or endpoint.route, json=endpoint.body
        )
        answers[endpoint.route] = response.status_code
    target.log_in()
    # the logout last: it ends the session
    for endpoint in sorted(CONSOLE_ENDPOINTS, key=lambda e: e.route == "/console/logout"):
        path, fields = target.form(endpoint)
        with console_client(target, endpoint) as client:
            response = client.post(target.server.url + path, data=fields)
        answers[endpoint.route] = response.status_code
    refused = {route: status for route, status in answers.items() if status in (401, 403)}
    assert not refused
    assert answers["/node/v1/hello"] == 200 and answers["/admin/webhooks"] == 201
    assert answers["/console/keys"] == 200 and answers["/console/logout"] == 303


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=lambda e: f"{e.method} {e.route}")
def test_hostile_json_bodies(target: Target, endpoint: Endpoint) -> None:
    @HYPOTHESIS
    @given(body=hostile_body(endpoint))
    def run(body: str) -> None:
        before = target.counts()
        response = target.clients[endpoint.caller].request(
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


@pytest.mark.parametrize(("caller", "template"), ID_PATHS)
def test_hostile_ids_in_paths_and_queries(target: Target, caller: str, template: str) -> None:
    for hostile in HOSTILE_IDS:
        path = template.replace("{id}", hostile)
        for method in ("GET", "DELETE") if "?" not in template else ("GET",):
            response = target.clients[caller].request(method, path)
            check_answer(response, f"{method} {path[:200]}")


def test_raw_bytes_upload_with_hostile_token(target: Target) -> None:
    for hostile in HOSTILE_IDS:
        response = target.http.put(f"/v1/uploads/{hostile}", content=b"x")
        check_answer(response, f"PUT /v1/uploads/{hostile[:100]}")


def percent(text: str) -> str:
    """``text`` %-encoded as UTF-8, a lone surrogate as the bytes a careless client sends."""
    return quote_from_bytes(text.encode("utf-8", "surrogatepass"), safe="")


def check_console_answer(response: httpx.Response, what: str) -> None:
    """Not a 5xx; a refusal is the console's own HTML page, with no database words."""
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("text/html"), f"{what}: {response}"
        for leak in ("asyncpg", "sqlite3", "Traceback", "invalid byte sequence", "psycopg"):
            assert leak not in response.text, f"{what}: {response.text[:500]}"


@contextlib.contextmanager
def console_client(target: Target, endpoint: Endpoint) -> Iterator[httpx.Client]:
    """The target's console session; a client without one for the login form."""
    if endpoint.route != "/console/login":
        yield target.console
        return
    with httpx.Client() as client:
        yield client


@pytest.mark.parametrize("endpoint", CONSOLE_ENDPOINTS, ids=lambda e: f"{e.method} {e.route}")
def test_hostile_console_forms(target: Target, endpoint: Endpoint) -> None:
    """Each field of a console form (and its path's id, and an extra field) hostile, in
    an admin's live session with its CSRF token: a 4xx page or the form's own answer."""
    assert endpoint.fields is not None
    places = [*endpoint.fields, "hostile", *(["path"] if "{}" in (endpoint.path or "") else [])]
    target.log_in()

    @HYPOTHESIS
    @given(place=st.sampled_from(places), value=HOSTILE_TEXT)
    def run(place: str, value: str) -> None:
        if not target.csrf:  # the last example logged out
            target.log_in()
        path, fields = target.form(endpoint)
        if place == "path":
            path = (endpoint.path or "").replace("{}", percent(value))
        else:
            fields[place] = value
        before = target.counts()
        body = "&".join(f"{percent(name)}={percent(text)}" for name, text in fields.items())
        with console_client(target, endpoint) as client:
            response = client.post(
                target.server.url + path,
                content=body.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                follow_redirects=False,
            )
        check_console_answer(response, f"{path[:100]} {place}={value[:100]!r}")
        if response.status_code >= 400:
            assert target.counts() == before, f"a refused form stored something: {value!r}"
        if endpoint.route == "/console/logout" and response.status_code == 303:
            target.csrf = ""

    run()


def test_hostile_console_cookies(target: Target) -> None:
    """A session cookie that is not ASCII, or no cookie of ours at all: the login page or
    a 401, whatever the page."""
    for cookie in ("e30.\xe9", "\xe9.\xe9", "\xff\xfe", "a.b.c", ".", "x" * 3000, "e30.%00"):
        header = f"inferq_console={cookie}".encode("latin-1")
        for method, path in (("GET", "/console/queues"), ("POST", "/console/logout")):
            with httpx.Client(base_url=target.server.url) as client:
                response = client.request(method, path, headers={b"Cookie": header})
            check_console_answer(response, f"{method} {path} {cookie[:50]!r}")
            assert response.status_code in (303, 401), response.text


class Lease:
    """A job of the node's model that the matrix's node holds (a new one once it ends)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.id = ""

    def row(self) -> list[tuple[Any, ...]]:
        """What the job holds that a node's report changes."""
        return self.target.query(
            "SELECT state, attempt, owner, CAST(info AS TEXT), CAST(result AS TEXT), "
            f"CAST(error AS TEXT) FROM jobs WHERE id = '{self.id}'"
        )[0]

    def hold(self) -> str:
        """The held job's id: the last one while it is still the node's first attempt."""
        if self.id and self.row()[0][:2] == ("running", 1):
            return self.id
        if self.id:  # handed back to the queue by an accepted fail: nobody else takes it
            self.target.http.post("/v1/queue/cancel", json={"model": REMOTE, "request_id": self.id})
        submit = {"model": REMOTE, "payload": {"messages": HELLO, "max_tokens": 4}}
        self.id = self.target.http.post("/v1/queue/submit", json=submit).json()["requestId"]
        claim = {"session": SESSION, "free": {REMOTE: 1}, "wait": 10}
        jobs = self.target.clients["node"].post("/node/v1/claim", json=claim).json()["jobs"]
        assert [job["id"] for job in jobs] == [self.id]
        return self.id


@pytest.mark.parametrize(
    "route", ["/node/v1/heartbeat", "/node/v1/complete", "/node/v1/fail", "/node/v1/results"]
)
def test_hostile_node_reports_on_a_held_job(target: Target, route: str) -> None:
    """A node's report on a job it really holds, with a hostile value anywhere: refused, it
    leaves the job as it was; accepted, the job reads back."""
    endpoint = BY_ROUTE[("POST", route)]
    lease = Lease(target)

    @HYPOTHESIS
    @given(body=hostile_body(endpoint))
    def run(body: str) -> None:
        job_id = lease.hold()
        before = lease.row()
        response = target.clients["node"].post(
            route,
            content=body.replace('"none"', f'"{job_id}"').encode("utf-8", "surrogatepass"),
            headers={"Content-Type": "application/json"},
        )
        check_answer(response, f"{route} {body[:200]!r}")
        refused = response.status_code >= 400
        if route.endswith("/results") and not refused:  # each result's fate of its own
            refused = not response.json()["results"][0]["ok"]
        if refused:
            assert lease.row() == before, f"a refused report changed the job: {body[:300]!r}"
        status = target.http.get("/v1/queue/status", params={"request_id": job_id, "model": REMOTE})
        assert status.status_code == 200, status.text

    run()
    if lease.row()[0][0] in ("queued", "running"):
        target.http.post("/v1/queue/cancel", json={"model": REMOTE, "request_id": lease.id})


def test_hostile_node_file_uploads(target: Target) -> None:
    """A node's output file upload with a hostile job id, file name, session or attempt."""
    node = target.clients["node"]
    good = {"job": "none", "name": "out.png", "session": SESSION, "attempt": "1"}
    for place in good:
        for hostile in HOSTILE_IDS:
            parts = {**good, place: hostile}
            path = (
                f"/node/v1/jobs/{parts['job']}/files/{parts['name']}"
                f"?session={parts['session']}&attempt={parts['attempt']}"
            )
            before = target.counts()
            response = node.put(path, content=b"x")
            check_answer(response, f"PUT {path[:200]}")
            assert 400 <= response.status_code < 500, response.text
            assert target.counts() == before


def test_accepted_work_reads_back_and_ends(target: Target) -> None:
    """Runs after the matrix (tests run in file order): whatever was accepted is readable
    and runs to an end, on a server that still answers."""
    assert target.server.proc is not None and target.server.proc.poll() is None
    assert httpx.get(target.server.url + "/healthz", timeout=5).status_code == 200
    wait_until(
        lambda: (
            not target.query(
                "SELECT id FROM jobs WHERE state IN ('queued', 'running') AND batch_id IS NULL"
            )[0]
        ),
        timeout=120,
        interval=0.5,
        what="accepted hostile jobs to end",
    )
    jobs = target.query("SELECT id, model, state, error FROM jobs WHERE batch_id IS NULL")[0]
    assert jobs, "the matrix got no job accepted: its valid bodies are wrong"
    lost = [job for job in jobs if job[3] and "worker_lost" in str(job[3])]
    assert not lost, f"jobs that could not be run: {lost[:5]}"
    for job_id, model, _, _ in jobs[:300]:
        response = target.http.get(
            "/v1/queue/status", params={"request_id": job_id, "model": model}
        )
        check_answer(response, f"status of {job_id}")
        assert response.status_code == 200, response.text


def write_routes() -> set[tuple[str, str]]:
    """Every (method, path) of the app that writes: included routers flattened (FastAPI
    keeps an included router as one entry of ``app.routes``, its routes inside it)."""
    from fastapi.routing import iter_route_contexts
    from starlette.routing import Mount

    from inferq.api.app import create_app
    from inferq.config import Settings

    app = create_app(Settings(data_dir=Path("/nonexistent")))
    # a mounted app is static files only: a mount with routes of its own would hide them
    assert all(not getattr(r.app, "routes", None) for r in app.routes if isinstance(r, Mount))
    return {
        (method, str(context.path))
        for context in iter_route_contexts(app.routes)
        for method in context.methods or ()
        if method in ("POST", "PUT", "PATCH", "DELETE")
    }


def test_every_write_route_is_in_the_matrix() -> None:
    """A new write endpoint must be added to ENDPOINTS, so it gets the hostile inputs;
    an entry of ENDPOINTS that is no route any more is stale."""
    routes = write_routes()
    assert ("POST", "/v1/chat/completions") in routes  # the walk reaches included routers
    writes = {(method, path) for method, path in routes if method != "DELETE"}
    missing = writes - set(BY_ROUTE)
    assert not missing, f"write routes without hostile-input cases: {sorted(missing)}"
    stale = set(BY_ROUTE) - writes
    assert not stale, f"hostile-input cases of no write route: {sorted(stale)}"
    # a DELETE has no body: its id gets the hostile ids (ID_PATHS)
    deleted = [template.replace("{id}", "x") for _, template in ID_PATHS if "?" not in template]
    unreached = [
        path
        for method, path in routes
        if method == "DELETE"
        and not any(re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", path), p) for p in deleted)
    ]
    assert not unreached, f"DELETE routes without hostile ids: {unreached}"
