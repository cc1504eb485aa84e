"""The node's own HTTP/1.1 connections (inferq.worker.wire) against a plain asyncio server:
answers with a length, chunked or ended by a close, kept connections reused, one the
server closed while it was idle replaced, and failures raised as httpx's errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from inferq.worker.client import NodeClient, ServerRefused
from inferq.worker.wire import Wire, wire_for


def sized(body: bytes, status: str = "200 OK") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def chunked(body: bytes) -> bytes:
    half = len(body) // 2
    pieces = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:half], body[half:]))
    return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + pieces + b"0\r\n\r\n"


class FakeServer:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.answer: Callable[[Any], bytes] = lambda body: sized(json.dumps(body).encode())
        #: close each connection after this many requests (None: keep it)
        self.close_after: int | None = None
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head.decode().split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = json.loads(await reader.readexactly(int(headers["content-length"])))
                self.requests.append((lines[0], headers, body))
                writer.write(self.answer(body))
                await writer.drain()
                served += 1
                if self.close_after is not None and served >= self.close_after:
                    return
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    srv = FakeServer()
    await srv.start()
    yield srv
    await srv.stop()


async def test_calls_reuse_a_kept_connection_and_send_the_protocols_headers(
    server: FakeServer,
) -> None:
    client = NodeClient(server.url + "/prefix/", "iqn-secret")
    try:
        assert client.wire is not None
        for i in range(3):
            assert await client._post("/node/v1/echo", {"n": i}) == {
                "session": client.session,
                "n": i,
            }
    finally:
        await client.close()
    assert server.connections == 1
    line, headers, _ = server.requests[0]
    assert line == "POST /prefix/node/v1/echo HTTP/1.1"
    assert headers["authorization"] == "Bearer iqn-secret"
    assert headers["content-type"] == "application/json"
    assert headers["host"] == server.url.removeprefix("http://")


async def test_chunked_and_close_ended_answers_are_read(server: FakeServer) -> None:
    wire = Wire(httpx.URL(server.url), {}, connect_timeout=5)
    try:
        server.answer = lambda body: chunked(json.dumps(body).encode())
        assert json.loads((await wire.post("/x", b'{"a": 1}', timeout=5))[1]) == {"a": 1}
        server.answer = lambda body: b"HTTP/1.1 200 OK\r\n\r\n" + json.dumps(body).encode()
        server.close_after = 1
        assert json.loads((await wire.post("/x", b'{"b": 2}', timeout=5))[1]) == {"b": 2}
    finally:
        await wire.close()


async def test_a_connection_the_server_closed_while_idle_is_replaced(server: FakeServer) -> None:
    server.answer = lambda body: sized(json.dumps(body).encode())
    server.close_after = 1  # each connection serves one request, then closes
    wire = Wire(httpx.URL(server.url), {}, connect_timeout=5)
    try:
        for i in range(3):
            status, body = await wire.post("/x", json.dumps({"i": i}).encode(), timeout=5)
            assert status == 200 and json.loads(body) == {"i": i}
    finally:
        await wire.close()
    assert server.connections == 3 and len(server.requests) == 3


async def test_refusals_and_lost_servers_raise_what_the_node_handles(server: FakeServer) -> None:
    error = {"error": {"code": "invalid_node_token", "message": "no"}}
    server.answer = lambda body: sized(json.dumps(error).encode(), status="401 Unauthorized")
    client = NodeClient(server.url, "iqn-x")
    try:
        with pytest.raises(ServerRefused) as refused:
            await client.hello({"m": 1})
        assert refused.value.bad_token and refused.value.code == "invalid_node_token"
        server.answer = lambda body: sized(b"not json")
        with pytest.raises(httpx.HTTPError):
            await client.hello({"m": 1})
        server.answer = lambda body: b""  # closes without an answer
        server.close_after = 1
        with pytest.raises(httpx.HTTPError):
            await client.hello({"m": 1})
    finally:
        await client.close()
    gone = NodeClient("http://127.0.0.1:1", "iqn-x")
    try:
        with pytest.raises(httpx.ConnectError):
            await gone.hello({"m": 1})
    finally:
        await gone.close()


async def test_a_slow_answer_times_out(server: FakeServer) -> None:
    wire = Wire(httpx.URL(server.url), {}, connect_timeout=5)

    def never(body: Any) -> bytes:
        return b""  # writes nothing and keeps the connection open

    server.answer = never
    try:
        with pytest.raises(httpx.ReadTimeout):
            await wire.post("/x", b"{}", timeout=0.2)
    finally:
        await wire.close()


async def test_an_answer_that_is_not_http_is_a_protocol_error(server: FakeServer) -> None:
    wire = Wire(httpx.URL(server.url), {}, connect_timeout=5)
    server.answer = lambda body: b"SSH-2.0-OpenSSH_9.2\r\n\r\n"
    try:
        with pytest.raises(httpx.RemoteProtocolError):
            await wire.post("/x", b"{}", timeout=5)
        assert wire._idle == []  # the connection is not kept
    finally:
        await wire.close()


def test_a_proxy_in_the_environment_sends_the_calls_through_httpx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "no_proxy", "NO_PROXY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert wire_for(httpx.URL("http://queue.internal:8000"))
    assert wire_for(httpx.URL("https://queue.internal"))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert not wire_for(httpx.URL("https://queue.internal"))
    assert wire_for(httpx.URL("http://queue.internal"))
    monkeypatch.setenv("NO_PROXY", "queue.internal")
    assert wire_for(httpx.URL("https://queue.internal"))
