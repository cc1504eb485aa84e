"""Bounds on how long a client may take to send its request.

uvicorn has none: a client that opens a connection and trickles its headers, or
declares ``Content-Length: 1000`` and never sends the body, holds a connection
(and, for the body, a request task) forever. Two pieces bound it:

* :class:`BodyTimeoutMiddleware` (ASGI): while the app waits for the next piece
  of the body, it waits at most ``body_timeout`` seconds; then the request gets a
  408 in its dialect's shape and the connection is closed. The bound is the idle
  time between pieces, not the whole body, so a large upload that keeps moving
  is never cut. Once the body is complete, ``receive`` is not bounded (it then
  only reports a disconnect, which streams and sync requests wait for); nor is a
  piece the server says has come already (:data:`BODY_READY`).
* :func:`http_protocol` (uvicorn's httptools protocol): the request line and
  headers must arrive within ``header_timeout`` seconds of the connection being
  made (the first request) or of their first byte (later requests on a
  keep-alive connection, whose idle time uvicorn's keep-alive timeout bounds);
  then a plain 408 is written, when nothing else is being answered, and the
  connection is closed. The same protocol closes a connection whose app has
  answered without reading the body while the client still owes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from inferq.api.dialect import Dialects
from inferq.api.errors import DialectMiddleware, RequestTimeout, render, send_response

log = logging.getLogger("inferq.api")

#: the scope key of a ``() -> bool`` that :class:`TimeoutHttpToolsProtocol` puts in each
#: request's scope: whether a piece of the body (or its end) has come and not been read,
#: so that the next ``receive`` returns without waiting. A request's body mostly comes
#: with its headers; :class:`BodyTimeoutMiddleware` then reads it without arming a timer
#: (an ``asyncio.timeout`` costs a submit 6-9 µs).
BODY_READY = "inferq.body_ready"


class BodyTimeoutMiddleware(DialectMiddleware):
    """Answers 408 when no piece of the request body arrives for ``timeout`` seconds."""

    def __init__(self, app: ASGIApp, *, dialects: Dialects, timeout: float) -> None:
        super().__init__(app, dialects=dialects)
        self.timeout = timeout

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        body_done = False
        timed_out = False
        started = False
        ready: Callable[[], bool] | None = scope.get(BODY_READY)

        async def timed_receive() -> Message:
            nonlocal body_done, timed_out
            if body_done:
                return await receive()
            if ready is not None and ready():
                message = await receive()
            else:
                try:
                    async with asyncio.timeout(self.timeout):
                        message = await receive()
                except TimeoutError:
                    timed_out = True
                    log.info(
                        "%s %s: no part of the request body came for %g s; answering 408",
                        scope.get("method"),
                        scope.get("path"),
                        self.timeout,
                    )
                    raise RequestTimeout(
                        f"the request body did not arrive: nothing came for {self.timeout:g} s"
                    ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if timed_out:
                    # the rest of the body may still come: this connection cannot be reused
                    headers = [*message.get("headers", []), (b"connection", b"close")]
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except RequestTimeout as exc:
            if started:
                raise
            await send_response(
                scope, tracking_send, render(self.dialects.for_path(scope["path"]), exc)
            )


def _plain_408(default_headers: list[tuple[bytes, bytes]], message: str) -> bytes:
    body = message.encode("ascii")
    content = [STATUS_LINE[408]]
    for name, value in default_headers:
        content += [name, b": ", value, b"\r\n"]
    content += [
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
        b"connection: close\r\n",
        b"\r\n",
        body,
    ]
    return b"".join(content)


class _Timer:
    """Calls ``callback`` ``delay`` seconds after :meth:`start`; one call pending at most.

    Starting and cancelling only move a deadline: a loop timer is made when none is
    waiting, and one that comes before the deadline waits again for the rest. Each
    request of a keep-alive connection starts and cancels these timers three to five
    times; making and cancelling a loop timer each time cost a request 5-7 µs.
    :meth:`close` cancels the loop's timer itself (a closed connection keeps none).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, delay: float, callback: Callable[[], None]
    ) -> None:
        self._loop = loop
        self._delay = delay
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        #: when the callback is due; None: not started (or cancelled, or called)
        self._deadline: float | None = None

    def start(self, *, over: bool = False) -> None:
        """Start the wait, unless one is pending (``over``: start that one over)."""
        if self._deadline is not None and not over:
            return
        self._deadline = self._loop.time() + self._delay
        if self._handle is None:
            self._handle = self._loop.call_at(self._deadline, self._due)

    def cancel(self) -> None:
        self._deadline = None

    def close(self) -> None:
        """Cancel, and drop the loop's timer too."""
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _due(self) -> None:
        self._handle = None
        if self._deadline is None:
            return
        if self._loop.time() < self._deadline:  # started over since: wait for the rest
            self._handle = self._loop.call_at(self._deadline, self._due)
            return
        self._deadline = None
        self._callback()


class TimeoutHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout (see the module docstring).

    Use :func:`http_protocol` to get one with the configured timeouts.
    """

    header_timeout: float = 10.0
    body_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer = _Timer(self.loop, self.header_timeout, self._headers_late)
        self._body_timer = _Timer(self.loop, self.body_timeout, self._body_late)
        #: the start of a request has come, its headers have not all come yet
        self._in_headers = False

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _headers_late(self) -> None:
        if self.transport.is_closing():
            return
        prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
        if self._in_headers and not self._answering():
            log.info("%srequest headers incomplete after %g s; 408", prefix, self.header_timeout)
            self.transport.write(
                _plain_408(
                    self.server_state.default_headers,
                    f"The request headers did not arrive within {self.header_timeout:g} s.",
                )
            )
        else:
            log.debug("%sno request within %g s; closing", prefix, self.header_timeout)
        self.transport.close()

    def _body_late(self) -> None:
        if self.transport.is_closing():
            return
        if self._answering():
            # The app runs: it reads the body through BodyTimeoutMiddleware, which
            # answers 408 when the client stalls (reading may also be paused while the
            # app works, which is not the client's fault). Look again later.
            self._body_timer.start()
            return
        # Answered without reading the whole body, and the client stopped sending it.
        self.transport.close()

    # -- protocol and parser callbacks ----------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer.start()

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_timer.close()
        self._body_timer.close()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_timer.start()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_timer.cancel()
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            scope = cast(dict[str, Any], self.scope)  # an ASGI scope may hold more keys
            scope[BODY_READY] = self.cycle.message_event.is_set
            self._body_timer.start(over=True)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if not self.cycle.response_complete:
            self._body_timer.start(over=True)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._body_timer.cancel()


def http_protocol(*, header_timeout: float, body_timeout: float) -> type[HttpToolsProtocol]:
    """A uvicorn ``http=`` protocol class with these timeouts (seconds)."""
    return type(
        "InferqHttpProtocol",
        (TimeoutHttpToolsProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
