"""A real server against slow and stalled clients (raw sockets), and what its log and
data directory hold: no signed-URL token, the admin key once, private file modes.

The server runs the fake engine with 1 s header and body timeouts.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server, fake_models_file

pytestmark = pytest.mark.integration

TIMEOUT = 1.0
#: a stalled client must be let go well before this (seconds)
LET_GO_WITHIN = 6.0
PUBLIC_URL = "https://inferq.example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("slow")
    env = {
        "INFERQ_HEADER_TIMEOUT": str(TIMEOUT),
        "INFERQ_BODY_TIMEOUT": str(TIMEOUT),
        "INFERQ_PUBLIC_URL": PUBLIC_URL,
    }
    srv = Server(root / "data", models_file=fake_models_file(root / "models.toml"), env=env)
    old = os.umask(0o022)  # the child inherits it: a loose umask, as on most machines
    try:
        srv.start()
    except BaseException:
        srv.kill()
        raise
    finally:
        os.umask(old)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.create_key("slow", "slow")


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=LET_GO_WITHIN + 4)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and how long that took."""
    started = time.monotonic()
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise AssertionError(f"the server kept the connection open; got {data!r}") from None
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def _send_slowly(sock: socket.socket, pieces: list[bytes], pause: float) -> bool:
    """Send ``pieces`` with ``pause`` between them; False once the server has closed."""
    for piece in pieces:
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return False
        time.sleep(pause)
    return True


def _split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


# -- headers ------------------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with _connect(server) as sock:
        data, took = _read_until_closed(sock)
    assert data == b"" and took < LET_GO_WITHIN


def test_headers_sent_too_slowly_get_408_and_a_close(server: Server) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        trickle = [b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n"] + [b"X-Slow: 1\r\n"] * 20
        # a header line every 0.3 s, none of them the last: never complete
        _send_slowly(sock, trickle, 0.3)
        data, _ = _read_until_closed(sock)
    status, headers, _ = _split(data)
    assert status == 408 and headers["connection"] == "close"
    assert time.monotonic() - started < LET_GO_WITHIN + 1


# -- bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/chat/completions", "openai"),
        ("/v1/queue/submit", "together"),
        ("/submit_job", "infera"),
    ],
)
def test_a_declared_body_never_sent_gets_408_in_the_dialects_shape(
    server: Server, key: str, path: str, shape: str
) -> None:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\napi_key: {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with _connect(server) as sock:
        sock.sendall(request + b'{"model": "fake", ')
        data, took = _read_until_closed(sock)
    assert took < LET_GO_WITHIN
    status, headers, body = _split(data)
    assert status == 408 and headers["connection"] == "close", data
    error = json.loads(body)
    if shape == "openai":
        assert "did not arrive" in error["error"]["message"]
    elif shape == "together":
        assert "did not arrive" in error["message"] and "code" in error
    else:
        assert "did not arrive" in error["detail"]


def test_a_steady_slow_body_is_not_cut(server: Server, key: str) -> None:
    """The bound is the idle time between pieces: 3 s of body in 0.4 s steps is fine."""
    body = json.dumps(
        {"model": "fake", "messages": [{"role": "user", "content": "x" * 200}], "max_tokens": 4}
    ).encode()
    pieces = [body[i : i + 30] for i in range(0, len(body), 30)]
    assert len(pieces) * 0.4 > 3 * TIMEOUT
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with _connect(server) as sock:
        sock.sendall(head)
        assert _send_slowly(sock, pieces, 0.4)
        data, _ = _read_until_closed(sock)
    status, _, reply = _split(data)
    assert status == 200, data
    assert b"chat.completion" in reply


def test_a_slow_multipart_upload_is_not_cut(server: Server, key: str) -> None:
    content = b"".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
            }
        ).encode()
        + b"\n"
        for i in range(20)
    )
    boundary = "slowboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    pieces = [body[i : i + len(body) // 8 + 1] for i in range(0, len(body), len(body) // 8 + 1)]
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with _connect(server) as sock:
        sock.sendall(head)
        assert _send_slowly(sock, pieces, 0.5)
        data, _ = _read_until_closed(sock)
    status, _, reply = _split(data)
    assert status == 200, data
    assert json.loads(reply)["bytes"] == len(content)


def test_a_big_upload_at_full_speed_works(server: Server, key: str) -> None:
    line = json.dumps(
        {
            "custom_id": "x",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "fake", "messages": [{"role": "user", "content": "y" * 900}]},
        }
    )
    content = "".join(line.replace('"x"', f'"c{i}"') + "\n" for i in range(5000)).encode()
    response = httpx.post(
        f"{server.url}/v1/files",
        headers={"authorization": f"Bearer {key}"},
        data={"purpose": "batch"},
        files={"file": ("big.jsonl", content)},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(content)


def test_a_body_left_trickling_after_the_answer_is_cut(server: Server) -> None:
    """The app answers (404) without reading the body; the client keeps it coming, a byte
    at a time (each byte would reset uvicorn's keep-alive timer)."""
    request = (
        b"POST /no/such/route HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 1000\r\n\r\n0123456789"
    )
    with _connect(server) as sock:
        sock.sendall(request)
        time.sleep(0.2)
        started = time.monotonic()
        still_open = _send_slowly(sock, [b"x"] * 30, 0.3)
        data, _ = _read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 404")
    assert not still_open and time.monotonic() - started < LET_GO_WITHIN


# -- the log and the data directory ----------------------------------------------------------


def test_signed_urls_use_the_public_url_and_stay_out_of_the_log(server: Server) -> None:
    key = server.create_key("signer", "signer")
    base = "/v1/accounts/acme/datasets"
    data = b'{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "hi"}]}}\n'
    with httpx.Client(
        base_url=server.url, headers={"authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        made = client.post(base, json={"datasetId": "ds", "dataset": {"exampleCount": "1"}})
        assert made.status_code == 200, made.text
        put_url = client.post(
            f"{base}/ds:getUploadEndpoint", json={"filenameToSize": {"in.jsonl": str(len(data))}}
        ).json()["filenameToSignedUrls"]["in.jsonl"]
        assert put_url.startswith(f"{PUBLIC_URL}/v1/uploads/")
        local_put = server.url + put_url.removeprefix(PUBLIC_URL)
        put = httpx.put(local_put, content=data, timeout=30)
        assert put.status_code == 200, put.text
        assert client.post(f"{base}/ds:validateUpload", json={}).status_code == 200
        urls = client.get(f"{base}/ds:getDownloadEndpoint").json()["filenameToSignedUrls"]
    (get_url,) = urls.values()
    assert get_url.startswith(f"{PUBLIC_URL}/v1/downloads/")
    fetched = httpx.get(server.url + get_url.removeprefix(PUBLIC_URL), timeout=30)
    assert fetched.status_code == 200 and fetched.content == data
    tokens = [url.rsplit("/", 1)[1] for url in (put_url, get_url)]
    time.sleep(0.5)  # the access log line of the last request
    log = server.log()
    assert "PUT /v1/uploads/[redacted]" in log and "GET /v1/downloads/[redacted]" in log
    for token in tokens:
        assert token not in log
        assert token.split(".")[1] not in log  # nor its signature alone


def test_the_admin_key_is_in_the_log_once(server: Server) -> None:
    keys = re.findall(r"iq-[A-Za-z0-9_-]{20,}", server.log())
    assert len(keys) == 1, keys


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_files_are_private(server: Server, key: str) -> None:
    created = httpx.post(
        f"{server.url}/v1/files",
        headers={"authorization": f"Bearer {key}"},
        data={"purpose": "batch"},
        files={"file": ("m.jsonl", b"{}\n")},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    data_dir = server.data_dir
    assert _mode(data_dir) == 0o700
    for name in ("inferq.db", "inferq.db-wal", "inferq.db-shm", "signing.key"):
        if (data_dir / name).exists():
            assert _mode(data_dir / name) == 0o600, name
    assert (data_dir / "inferq.db-wal").exists()
    blobs = [p for p in (data_dir / "blobs").rglob("*")]
    assert any(p.is_file() for p in blobs)
    for path in [data_dir / "blobs", *blobs]:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
