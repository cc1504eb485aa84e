"""The node protocol's JSON calls, on keep-alive HTTP/1.1 connections of the node's own.

httpx costs a node about 0.7 ms of CPU a request (its request and response models, its
connection pool's locks, h11's parser): as much as the rest of the node's work for the
thirty no-op jobs one report carries. The protocol's calls are all alike (POST a JSON
body to one server, read a JSON answer), so they go over asyncio streams here, answers
parsed by httptools (the C parser uvicorn serves with), with httpx's own TLS settings,
and fail with httpx's exceptions, so that the node handles
a lost server the same either way. Uploads still go through httpx, and so does
everything when the environment names a proxy for the server (httpx honours it).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from dataclasses import dataclass

import httptools
import httpx

#: idle connections kept for the next calls
KEEP_IDLE = 8
#: bytes read from the socket at a time
READ_SIZE = 64 * 1024


class _Stale(Exception):
    """A kept connection was closed by the server before it answered anything."""


def wire_for(url: httpx.URL) -> bool:
    """Whether calls to ``url`` can go over :class:`Wire` (no proxy in the way)."""
    if url.scheme not in ("http", "https") or not url.host:
        return False
    proxies = urllib.request.getproxies()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return True
    return bool(urllib.request.proxy_bypass(url.host))


@dataclass(eq=False)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


class Wire:
    """POSTs of JSON bodies to one server; each call on a connection of its own while
    it runs (idle ones are reused)."""

    def __init__(
        self,
        base_url: httpx.URL,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.tls = base_url.scheme == "https"
        self.host = base_url.host
        self.port = base_url.port or (443 if self.tls else 80)
        self.prefix = base_url.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.ssl_context = (ssl_context or httpx.create_ssl_context()) if self.tls else None
        host = self.host if base_url.port is None else f"{self.host}:{self.port}"
        if ":" in self.host:  # an IPv6 address
            host = f"[{self.host}]" if base_url.port is None else f"[{self.host}]:{self.port}"
        fixed = {"host": host, **headers, "content-type": "application/json"}
        self._head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self._idle: list[_Conn] = []

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def post(self, path: str, body: bytes, *, timeout: float) -> tuple[int, bytes]:
        """The status and body of the server's answer to ``body`` POSTed at ``path``."""
        request = (
            f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}content-length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body
        while True:
            conn, reused = await self._take()
            try:
                async with asyncio.timeout(timeout):
                    status, data, keep = await self._exchange(conn, request)
            except _Stale:
                conn.close()
                if reused:
                    continue  # closed while idle: the request never reached the server
                raise httpx.RemoteProtocolError("the server closed the connection") from None
            except TimeoutError:
                conn.close()
                raise httpx.ReadTimeout(f"no answer from the server in {timeout:.0f} s") from None
            except (OSError, asyncio.IncompleteReadError) as exc:
                conn.close()
                raise httpx.ReadError(f"the connection to the server failed: {exc!r}") from exc
            except ValueError as exc:
                conn.close()
                raise httpx.RemoteProtocolError(f"a malformed answer: {exc}") from exc
            except BaseException:  # cancelled mid-call: the connection is in no known state
                conn.close()
                raise
            if keep and len(self._idle) < KEEP_IDLE:
                self._idle.append(conn)
            else:
                conn.close()
            return status, data

    async def _take(self) -> tuple[_Conn, bool]:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn, True
            conn.close()
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"cannot connect to {self.host}:{self.port}") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return _Conn(reader, writer), False

    @staticmethod
    async def _exchange(conn: _Conn, request: bytes) -> tuple[int, bytes, bool]:
        conn.writer.write(request)
        await conn.writer.drain()
        answer = _Answer()
        parser = answer.parser = httptools.HttpResponseParser(answer)
        received = 0
        while not answer.complete:
            data = await conn.reader.read(READ_SIZE)
            if not data:
                if received == 0:
                    raise _Stale
                if answer.head_done and answer.until_close:
                    break  # a body that the connection's end delimits
                raise asyncio.IncompleteReadError(b"", None)
            received += len(data)
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise ValueError(str(exc)) from None
        return parser.get_status_code(), b"".join(answer.body), answer.complete and answer.keep


class _Answer:
    """What httptools' parser reports of one answer."""

    parser: httptools.HttpResponseParser

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.head_done = False
        #: whether the connection may carry the next call (known once the head is read)
        self.keep = False
        self.until_close = True
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.until_close = False

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.keep = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
