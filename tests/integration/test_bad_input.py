"""Bad input: a 4xx in the dialect's error shape naming the field, nothing stored, server fine.

The server runs with a small body limit (``INFERQ_MAX_BODY_BYTES``) so an
oversized body is cheap to send.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import openai
import pytest
import together
from inferaSDK import InferaSDK

from tests.integration.helpers import MODEL, jobs_of, new_key, raw, start_server
from tests.support.server import Server

pytestmark = pytest.mark.integration

MAX_BODY = 20_000
TENANT = "bad-input"
UNKNOWN_MODEL = "no-such-model"
HELLO = [{"role": "user", "content": "Say hello."}]
MALFORMED = b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", '
OVERSIZED = [{"role": "user", "content": "x" * (MAX_BODY + 1000)}]
#: JSON that the input guard refuses before any router reads it (a lone surrogate)
SURROGATE = b'{"model": "smollm2-135m-instruct", "prompt": "\\ud800"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("bad-input"), env={"INFERQ_MAX_BODY_BYTES": str(MAX_BODY)}
    )
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return new_key(server, TENANT)


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    #: a JSON body, or raw bytes sent as application/json
    body: Any
    status: int
    #: the field the error must name (None: the message must mention the body)
    field: str | None

    @property
    def dialect(self) -> str:
        if self.path.startswith("/v1/queue"):
            return "together"
        return "openai" if self.path.startswith("/v1/") else "infera"


def queue_job(**payload: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": HELLO, "max_tokens": 4}
    body.update(payload)
    return {"model": MODEL, "payload": {k: v for k, v in body.items() if v is not ...}}


def chat(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": HELLO, "max_tokens": 4}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def infera_job(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": HELLO, "max_output": 4, "temperature": 0}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


def infera_chat(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": HELLO, "max_tokens": 4, "temperature": 0}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


ROLE = [{"role": "wizard", "content": "hi"}]
SUBMIT, CHAT = "/v1/queue/submit", "/v1/chat/completions"
JOB, ICHAT = "/submit_job", "/chat/completions"
A_UUID1 = "6fa459ea-ee8a-11ea-8000-0242ac120002"

# (id, body, the field the error must name, status); None as the field: the message names the body
TOGETHER_SUBMIT = [
    ("malformed JSON", MALFORMED, "body", 400),
    ("missing model", {"payload": {"messages": HELLO}}, "model", 400),
    ("missing payload", {"model": MODEL}, "payload", 400),
    ("missing messages", queue_job(messages=...), "payload.messages", 400),
    ("payload not an object", {"model": MODEL, "payload": "hi"}, "payload", 400),
    ("priority not an int", {**queue_job(), "priority": "high"}, "priority", 400),
    ("info not an object", {**queue_job(), "info": [1]}, "info", 400),
    ("temperature not a number", queue_job(temperature="hot"), "payload.temperature", 400),
    ("unknown model", {**queue_job(), "model": UNKNOWN_MODEL}, "model", 400),
    ("max_tokens 0", queue_job(max_tokens=0), "payload.max_tokens", 400),
    ("max_tokens negative", queue_job(max_tokens=-5), "payload.max_tokens", 400),
    ("max_tokens over context", queue_job(max_tokens=2048), "max_tokens", 400),
    ("empty messages", queue_job(messages=[]), "payload.messages", 400),
    ("unknown role", queue_job(messages=ROLE), "payload.messages.0.role", 400),
    ("oversized body", queue_job(messages=OVERSIZED), None, 413),
]
OPENAI_CHAT = [
    ("malformed JSON", MALFORMED, "body", 400),
    ("missing model", chat(model=...), "model", 400),
    ("missing messages", chat(messages=...), "messages", 400),
    ("max_tokens not an int", chat(max_tokens="many"), "max_tokens", 400),
    ("messages not a list", chat(messages="hi"), "messages", 400),
    ("unknown model", chat(model=UNKNOWN_MODEL), "model", 404),
    ("max_tokens 0", chat(max_tokens=0), "max_tokens", 400),
    ("max_tokens negative", chat(max_tokens=-1), "max_tokens", 400),
    ("max_tokens over context", chat(max_tokens=2048), "max_tokens", 400),
    ("empty messages", chat(messages=[]), "messages", 400),
    ("unknown role", chat(messages=ROLE), "messages.0.role", 400),
    ("n above 8", chat(n=9), "n", 400),
    ("negative timeout", chat(timeout=-1), "timeout", 400),
    ("oversized body", chat(messages=OVERSIZED), None, 413),
]
INFERA_SUBMIT = [
    ("malformed JSON", MALFORMED, "body", 422),
    ("a lone surrogate", SURROGATE, "body", 422),
    ("missing temperature", infera_job(temperature=...), "body.temperature", 422),
    ("max_output not an int", infera_job(max_output="x"), "body.max_output", 422),
    ("unknown model", infera_job(model=UNKNOWN_MODEL), UNKNOWN_MODEL, 404),
    ("max_output negative", infera_job(max_output=-1), "body.max_output", 422),
    ("max_output over context", infera_job(max_output=2048), "body.max_output", 422),
    ("empty messages", infera_job(messages=[]), "body.messages", 422),
    ("unknown role", infera_job(messages=ROLE), "body.messages.0.role", 422),
    ("oversized body", infera_job(messages=OVERSIZED), None, 413),
]
INFERA_CHAT = [
    ("missing max_tokens", infera_chat(max_tokens=...), "body.max_tokens", 422),
    ("max_tokens 0", infera_chat(max_tokens=0), "body.max_tokens", 422),
    ("max_tokens over context", infera_chat(max_tokens=4096), "body.max_tokens", 422),
    ("unknown role", infera_chat(messages=ROLE), "body.messages.0.role", 422),
    ("zero timeout", infera_chat(request_timeout_time=0), "body.request_timeout_time", 422),
]
# (id, method, path, body, field, status)
STATUS = f"/v1/queue/status?model={MODEL}"
OTHERS = [
    ("together status without id", "GET", STATUS, None, "request_id", 400),
    ("together metrics without model", "GET", "/v1/queue/metrics", None, "model", 400),
    ("together cancel without id", "POST", "/v1/queue/cancel", {"model": MODEL}, "request_id", 400),
    ("infera get_result of a non-UUID", "GET", "/get_result/x", None, "path.job_id", 422),
    ("infera get_result of a UUID1", "GET", f"/get_result/{A_UUID1}", None, "path.job_id", 422),
    ("infera completion time, non-UUID", "GET", "/get_completion_time/1", None, "path.job_id", 422),
]

CASES = [
    *(
        Case(f"{dialect} {name}", "POST", path, body, status, field)
        for dialect, path, table in [
            ("together", SUBMIT, TOGETHER_SUBMIT),
            ("openai", CHAT, OPENAI_CHAT),
            ("infera", JOB, INFERA_SUBMIT),
            ("infera chat", ICHAT, INFERA_CHAT),
        ]
        for name, body, field, status in table
    ),
    *(
        Case(n, method, path, body, status, field)
        for n, method, path, body, field, status in OTHERS
    ),
]


def assert_error_shape(case: Case, response: httpx.Response) -> None:
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if case.dialect == "together":
        assert set(body) == {"code", "message", "param", "type"}
        param, message = body["param"], body["message"]
    elif case.dialect == "openai":
        assert set(body) == {"error"}
        assert {"message", "type", "param", "code"} <= set(body["error"])
        param, message = body["error"]["param"], body["error"]["message"]
        if case.status == 404:
            assert body["error"]["code"] == "model_not_found"
    else:
        assert set(body) == {"detail"}
        detail = body["detail"]
        if case.status == 422:
            assert isinstance(detail, list) and detail
            assert all({"loc", "msg", "type"} <= set(item) for item in detail)
            assert detail[0]["loc"][:2] != ["body", "body"], detail
            param = ".".join(str(part) for part in detail[0]["loc"])
            message = detail[0]["msg"]
        else:
            assert isinstance(detail, str)
            param, message = None, detail
    assert isinstance(message, str) and message
    if case.field is None:
        assert "body" in message
    elif param is not None and case.status != 404:
        assert param == case.field or param.startswith(case.field + "."), (param, case.field)
    else:
        assert case.field in str(param) or case.field in message, (param, message)


def send(http: httpx.Client, case: Case) -> httpx.Response:
    if case.body is None:
        return http.request(case.method, case.path)
    content = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
    return http.request(
        case.method, case.path, content=content, headers={"content-type": "application/json"}
    )


def stored(http: httpx.Client) -> int:
    """The tenant's jobs, of the real model and of the unknown one."""
    total = 0
    for model in (MODEL, UNKNOWN_MODEL):
        response = http.get("/v1/queue/metrics", params={"model": model})
        assert response.status_code == 200, response.text
        total += response.json()["total_jobs"]
    return total


@pytest.fixture
def http(server: Server, key: str) -> Iterator[httpx.Client]:
    with raw(server, key) as client:
        client.headers["api_key"] = key  # Infera's header; the others read the Bearer one
        yield client


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_the_dialects_shape(http: httpx.Client, case: Case) -> None:
    before = stored(http)
    response = send(http, case)
    assert_error_shape(case, response)
    assert response.headers["x-should-retry"] == "false"
    assert stored(http) == before
    assert http.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "dialect_status"),
    [
        (SUBMIT, queue_job(messages=OVERSIZED), 413),
        (CHAT, chat(messages=OVERSIZED), 413),
        (JOB, infera_job(messages=OVERSIZED), 413),
    ],
    ids=["together", "openai", "infera"],
)
def test_oversized_chunked_body_is_refused(
    http: httpx.Client, path: str, body: dict[str, Any], dialect_status: int
) -> None:
    """Without a Content-Length the limit is enforced while the body streams in."""
    data = json.dumps(body).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    before = stored(http)
    response = http.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    case = Case("chunked", "POST", path, body, dialect_status, None)
    assert_error_shape(case, response)
    assert stored(http) == before


def test_sdks_surface_the_field_without_retrying(server: Server, key: str) -> None:
    sent: list[str] = []
    hook = {"request": [lambda r: sent.append(r.url.path)]}
    tq = together.Together(
        api_key=key, base_url=server.url, http_client=together.DefaultHttpxClient(event_hooks=hook)
    )
    with tq, pytest.raises(together.BadRequestError) as t_error:
        tq.beta.jig.queue.submit(model=UNKNOWN_MODEL, payload={"messages": HELLO})
    assert t_error.value.body["param"] == "model"

    oai = openai.OpenAI(
        api_key=key,
        base_url=server.url + "/v1",
        http_client=openai.DefaultHttpxClient(event_hooks=hook),
    )
    with oai, pytest.raises(openai.BadRequestError) as o_error:
        oai.chat.completions.create(model=MODEL, messages=ROLE, max_tokens=4)  # type: ignore[arg-type]
    assert o_error.value.param == "messages.0.role"
    assert sent == ["/v1/queue/submit", "/v1/chat/completions"]


async def test_infera_sdk_gets_the_validation_error(server: Server, key: str) -> None:
    async with aiohttp.ClientSession() as session:
        answer = await InferaSDK(key, base_url=server.url).submit_job(
            session, MODEL, HELLO, -1, 0.0
        )
    assert isinstance(answer, str) and answer.startswith("Error: 422"), answer
    assert "max_output" in answer


def test_nothing_was_stored_and_the_server_still_serves(server: Server, key: str) -> None:
    assert jobs_of(server, TENANT) == []
    with openai.OpenAI(api_key=key, base_url=server.url + "/v1") as oai:
        completion = oai.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert completion.choices[0].message.content
    assert len(jobs_of(server, TENANT)) == 1
