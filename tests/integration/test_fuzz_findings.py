"""Client input that a fuzzing pass (schemathesis and hand-made hostile requests) found
answered with a 5xx, or accepted with a value no store keeps, each kept as a regression.

Each case runs against a real server on SQLite and one on PostgreSQL (the fake engine):
the answer is a 4xx in the dialect's own shape, nothing is stored, and the server
still answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.helpers import new_key, start_server, wait_until
from tests.support.hostile_target import served
from tests.support.server import Server
from tests.support.server_db import server_rows

pytestmark = pytest.mark.integration

MODELS = """\
[models.fake]
engine = "fake"
context_length = 512
slots = 2
"""
#: a Together queue submission whose ``info`` holds ``VALUE``, written as JSON text
SUBMIT = (
    '{"model":"fake","info":{"x":VALUE},"payload":{"messages":[{"role":"user","content":"hi"}]}}'
)
#: what a refused request must leave as it was
STORED = [
    "SELECT count(*) FROM jobs",
    "SELECT count(*) FROM batches",
    "SELECT count(*) FROM files",
]


@dataclass
class Target:
    server: Server
    schema: str | None
    http: httpx.Client

    def query(self, *statements: str) -> list[list[tuple[Any, ...]]]:
        return server_rows(self.server.data_dir, self.schema, *statements)

    def counts(self) -> list[list[tuple[Any, ...]]]:
        return self.query(*STORED)

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
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with served(root, request.param, models=MODELS, key_name="fuzz") as (server, schema, http):
        yield Target(server, schema, http)


# -- JSON bodies the routers read but the input guard did not check --------------------

#: JSON text that breaks a rule of inferq.core.inputs, each as the routers' parser
#: (json.loads of the bytes) still reads it: with a byte order mark, in UTF-16 or UTF-32
#: (told apart by the first bytes), or with a surrogate UTF-8 encoded
ENCODED = [
    ("bom-surrogate", b"\xef\xbb\xbf" + SUBMIT.replace("VALUE", '"\\ud800"').encode()),
    ("bom-nan", b"\xef\xbb\xbf" + SUBMIT.replace("VALUE", "NaN").encode()),
    ("bom-big-int", b"\xef\xbb\xbf" + SUBMIT.replace("VALUE", str(2**64)).encode()),
    ("bom-nul", b"\xef\xbb\xbf" + SUBMIT.replace("VALUE", '"a\\u0000"').encode()),
    ("utf16-surrogate", SUBMIT.replace("VALUE", '"\\udfff"').encode("utf-16")),
    ("utf16be-nan", SUBMIT.replace("VALUE", "Infinity").encode("utf-16-be")),
    ("utf32-surrogate", SUBMIT.replace("VALUE", '"\\ud800"').encode("utf-32")),
    ("utf16-deep", SUBMIT.replace("VALUE", "[" * 5000 + "]" * 5000).encode("utf-16")),
    ("utf8-encoded-surrogate", SUBMIT.replace("VALUE", '"\xed\xa0\x80"').encode("latin-1")),
]


@pytest.mark.parametrize(("name", "body"), ENCODED, ids=[name for name, _ in ENCODED])
def test_json_in_other_encodings_passes_the_input_check(
    target: Target, name: str, body: bytes
) -> None:
    """Found: a 500 (a lone surrogate reached the store) or a 200 that stored NaN, which
    the worker then could not record an outcome for, on ``POST /v1/queue/submit``."""
    before = target.counts()
    response = target.http.post(
        "/v1/queue/submit", content=body, headers={"Content-Type": "application/json"}
    )
    target.refused(response, before)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "invalid_request_error"
    # text is checked once parsed, so the error names its field; a number the parser
    # refuses, or nesting too deep, is found before anything says where: the whole body
    text = "surrogate" in name or name.endswith("-nul")
    assert error["param"] == ("info.x" if text else "body"), error


def test_clean_json_in_utf16_is_still_accepted(target: Target) -> None:
    """What the routers read (a UTF-16 body is JSON to them) is not refused for its encoding."""
    body = SUBMIT.replace("VALUE", '"é"').encode("utf-16")
    response = target.http.post(
        "/v1/queue/submit", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text


def test_a_second_content_type_does_not_skip_the_input_check(target: Target) -> None:
    """Found: the guard read the last Content-Type (text/plain: not JSON, not checked)
    and the router the first (JSON): a lone surrogate reached the store, a 500."""
    body = SUBMIT.replace("VALUE", '"\\ud800"').encode()
    before = target.counts()
    response = target.http.post(
        "/v1/queue/submit",
        content=body,
        headers=[("Content-Type", "application/json"), ("Content-Type", "text/plain")],
    )
    target.refused(response, before)


# -- multipart uploads ---------------------------------------------------------------------


def _form(parts: list[tuple[bytes, bytes]], boundary: str = "fuzzboundary") -> bytes:
    out = b""
    for headers, data in parts:
        out += f"--{boundary}\r\n".encode() + headers + b"\r\n\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def _post_form(target: Target, body: bytes) -> httpx.Response:
    """A workflow job created from a multipart body written by :func:`_form`."""
    return target.http.post(
        "/api/v1/jobs/",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=fuzzboundary"},
    )


def test_workflow_input_file_name_with_a_nul(target: Target) -> None:
    """Found: ``POST /api/v1/jobs/`` with an input file named ``a\\x00b.txt``: a 500 on
    PostgreSQL (the name went into the job's record) after the file's blob was stored;
    on SQLite the NUL was stored."""
    body = _form(
        [
            (
                b'Content-Disposition: form-data; name="request_data"',
                b'{"template_id":"fast_partition"}',
            ),
            (
                b'Content-Disposition: form-data; name="input_files"; filename="a\x00b.txt"'
                b"\r\nContent-Type: text/plain",
                b"hello world",
            ),
        ]
    )
    before = target.counts()
    response = _post_form(target, body)
    target.refused(response, before)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "input_files", 0] and "NUL" in detail["msg"]


# -- a refused message batch ----------------------------------------------------------------

REMOTE_MODELS = (
    MODELS
    + """
[models.remote]
engine = "remote"
context_length = 512
"""
)


def _message_batch(n: int) -> dict[str, Any]:
    # a model that nodes serve, and no node runs: the batch stays open
    params = {"model": "remote", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    return {"requests": [{"custom_id": f"r{i}", "params": params} for i in range(n)]}


def test_a_refused_message_batch_leaves_no_requests_file(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Found: ``POST /v1/messages/batches`` refused for too many requests (400) or too
    many open batches (429) after its requests were written: the requests file stayed
    stored, with no batch over it (and the 400 named that file, not ``requests``)."""
    env = {"INFERQ_MAX_OPEN_BATCHES": "1", "INFERQ_MAX_BATCH_ROWS": "2"}
    server = start_server(tmp_path_factory.mktemp("fuzz-limits"), models=REMOTE_MODELS, env=env)
    try:
        key = new_key(server, "fuzz")
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            target = Target(server, None, http)
            before = target.counts()
            too_many = http.post("/v1/messages/batches", json=_message_batch(3))
            target.refused(too_many, before)
            assert too_many.status_code == 400
            assert too_many.json()["error"]["message"].startswith("requests: 3 requests")
            assert http.post("/v1/messages/batches", json=_message_batch(1)).status_code == 200
            # its row is made in the background: count once it is there
            wait_until(lambda: target.query("SELECT id FROM jobs")[0], what="the batch's row")
            before = target.counts()
            over_quota = http.post("/v1/messages/batches", json=_message_batch(1))
            target.refused(over_quota, before)
            assert over_quota.status_code == 429
    finally:
        server.stop()


# -- text that Python calls digits ----------------------------------------------------------

#: digits to ``str.isdigit`` that ``int`` refuses: a superscript, and more than Python's
#: 4300-digit limit on converting text to an integer
NOT_INTS = ["²", "9" * 5000]


@pytest.mark.parametrize("seconds", NOT_INTS, ids=["superscript", "5000-digits"])
def test_file_expiry_seconds_that_int_refuses(target: Target, seconds: str) -> None:
    """Found: ``POST /v1/files`` with ``expires_after[seconds]`` of "²" or 5000 nines: a
    500 (``int()`` raised ValueError), after the file had been stored and deleted."""
    before = target.counts()
    response = target.http.post(
        "/v1/files",
        data={
            "purpose": "batch",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": seconds,
        },
        files={"file": ("rows.jsonl", b"{}\n", "application/jsonl")},
    )
    target.refused(response, before)
    error = response.json()["error"]
    assert error["param"] == "expires_after.seconds", error


def test_workflow_request_data_key_that_looks_like_a_digit(target: Target) -> None:
    """Found: ``POST /api/v1/jobs/`` whose ``request_data`` has a bad value under the key
    "²": a 500, as the 422's ``loc`` turned each digit-like step of the param into an int."""
    request_data = b'{"template_id":"fast_partition","\xc2\xb2":"\\u0000"}'
    body = _form(
        [
            (b'Content-Disposition: form-data; name="request_data"', request_data),
            (b'Content-Disposition: form-data; name="input_files"; filename="a.txt"', b"hello"),
        ]
    )
    before = target.counts()
    response = _post_form(target, body)
    target.refused(response, before)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "request_data", "²"]


def test_file_download_range_of_thousands_of_digits(target: Target) -> None:
    """Found: ``GET /v1/files/{id}/content`` with ``Range: bytes=<5000 nines>-``: a 500
    (``int()`` refused the position). A position that long is past the end of the file."""
    data = b'{"a": 1}\n'
    uploaded = target.http.post(
        "/v1/files",
        data={"purpose": "batch"},
        files={"file": ("rows.jsonl", data, "application/jsonl")},
    )
    assert uploaded.status_code == 200, uploaded.text
    path = f"/v1/files/{uploaded.json()['id']}/content"
    huge = "9" * 5000
    past_the_end = target.http.get(path, headers={"Range": f"bytes={huge}-"})
    assert past_the_end.status_code == 416, past_the_end.text
    assert past_the_end.json()["error"]["code"] == "range_not_satisfiable"
    for whole in (f"bytes=-{huge}", f"bytes=0-{huge}"):
        response = target.http.get(path, headers={"Range": whole})
        assert response.status_code == 206 and response.content == data, whole[:20]


# -- an admin's webhook endpoint --------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["a" * 64 + ".com", "\u0430" * 70 + ".com", "a..b"], ids=["long", "long-idn", "empty"]
)
def test_webhook_url_whose_host_no_resolver_takes(target: Target, host: str) -> None:
    """Found: ``POST /admin/webhooks`` took a URL whose host has a label over 63
    characters (or an empty one): a 201, then every delivery raised UnicodeError in the
    resolver (a traceback at ERROR per attempt, retried for ever)."""
    endpoints = "SELECT count(*) FROM webhook_endpoints"
    before = target.query(endpoints)
    response = target.http.post(
        "/admin/webhooks",
        json={"tenant": "fuzz", "url": f"http://{host}/hook", "events": ["job.succeeded"]},
        headers={"Authorization": f"Bearer {target.server.admin_key()}"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "url"
    assert target.query(endpoints) == before
