"""Turning exceptions into each dialect's error body.

Services raise :class:`~inferq.core.errors.InferqError`; request validation
raises FastAPI's ``RequestValidationError``; routing raises Starlette's
``HTTPException``. One handler per exception kind picks the dialect that serves
the path (:meth:`~inferq.api.dialect.Dialects.for_path`) and lets it render the
body. Anything else is a bug: it is logged with its traceback and rendered as a
500 without internals.

The HTTP status of an error is the API's business, not the core's: :data:`STATUS`
maps the error classes to statuses (the most specific class listed wins), and a
dialect adds its own classes or overrides one (:attr:`Dialect.statuses`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferq.api.dialect import Dialect, Dialects, PathRules
from inferq.api.middleware import HttpMiddleware
from inferq.api.ranges import RangeNotSatisfiable
from inferq.core.errors import (
    AuthenticationFailed,
    ClientError,
    Conflict,
    DeadlineExceeded,
    EngineUnavailable,
    InferqError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PromptTooLong,
    QueueFull,
    StoreUnavailable,
    public,
)
from inferq.core.limits import Overloaded
from inferq.core.nodes import NoNodeConnected

log = logging.getLogger("inferq.api")


class RequestTimeout(ClientError):
    """The client took too long to send its request."""

    code = "request_timeout"


#: the HTTP status of each error class; a class not listed has its nearest base's
STATUS: Mapping[type[InferqError], int] = {
    InferqError: 500,
    ClientError: 400,
    AuthenticationFailed: 401,
    NotFound: 404,
    MethodNotAllowed: 405,
    RequestTimeout: 408,
    Conflict: 409,
    PayloadTooLarge: 413,
    RangeNotSatisfiable: 416,
    QueueFull: 429,
    Overloaded: 503,
    DeadlineExceeded: 408,
    StoreUnavailable: 503,
    PromptTooLong: 400,
    EngineUnavailable: 503,
}


def status_of(exc: InferqError, overrides: Mapping[type[InferqError], int] | None = None) -> int:
    """The HTTP status of ``exc``: its nearest class in ``overrides``, else in :data:`STATUS`."""
    for cls in type(exc).__mro__:
        if overrides and cls in overrides:
            return overrides[cls]
        if cls in STATUS:
            return STATUS[cls]
    return 500


def render(dialect: Dialect, exc: InferqError) -> Response:
    """``exc`` in ``dialect``'s shape, with the retry headers every dialect shares."""
    response = dialect.render_error(public(exc), status_of(exc, dialect.statuses))
    # The official SDKs retry 408/409 and 5xx by default; a client mistake, a
    # finished job or a deadline the client chose will not change on retry (a
    # retried 408 would only queue the same doomed request again), so tell them not to.
    if isinstance(exc, ClientError | DeadlineExceeded) and not isinstance(exc, QueueFull):
        response.headers["x-should-retry"] = "false"
    # a refusal that passes (a queue bound, no node connected yet) says when to look again
    if isinstance(exc, QueueFull | NoNodeConnected):
        response.headers["retry-after"] = f"{exc.retry_after:g}"
    return response


def _param(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    """The first problem of a failed validation, as an InvalidRequest naming the field."""
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return InvalidRequest(
            f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
            param="body",
        )
    param = _param(tuple(first.get("loc", ())))
    message = first["msg"]
    return InvalidRequest(f"{param}: {message}" if param else message, param=param or None)


def fastapi_validation(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422 body, for the dialects that document it (Infera, Unstructured)."""
    errors = [
        {key: err[key] for key in ("loc", "msg", "type", "input", "ctx") if key in err}
        for err in exc.errors()
    ]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def install_error_handlers(app: FastAPI, dialects: Dialects) -> None:
    def render_at(path: str, exc: InferqError) -> Response:
        return render(dialects.for_path(path), exc)

    async def on_inferq_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InferqError)
        if not isinstance(exc, ClientError):
            log.warning("%s %s failed: %s", request.method, request.url.path, exc)
        return render_at(request.url.path, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        dialect = dialects.for_path(request.url.path)
        if dialect.render_validation is not None:
            response = dialect.render_validation(exc)
            response.headers["x-should-retry"] = "false"
            return response
        return render(dialect, validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        mapped: InferqError
        if isinstance(exc.__cause__, InferqError):
            # FastAPI wraps errors raised while reading the body (the body limit
            # of a chunked request) in a 400 "error parsing the body".
            mapped = exc.__cause__
        elif exc.status_code == 404:
            mapped = NotFound(f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            mapped = MethodNotAllowed(
                f"method {request.method} is not allowed on {request.url.path}"
            )
        elif exc.status_code == 401:
            mapped = AuthenticationFailed(str(exc.detail))
        elif exc.status_code == 409:
            mapped = Conflict(str(exc.detail))
        else:
            mapped = InvalidRequest(str(exc.detail))
        return render_at(request.url.path, mapped)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return render_at(request.url.path, InferqError("internal error; see the server log"))

    app.add_exception_handler(InferqError, on_inferq_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


#: room for the multipart framing around an uploaded file
_MULTIPART_SLACK = 64 * 1024


class DialectMiddleware(HttpMiddleware):
    """An ASGI middleware that checks HTTP requests and answers a refusal in the shape of
    the path's dialect; other scopes (the lifespan) pass through untouched."""

    def __init__(self, app: ASGIApp, *, dialects: Dialects) -> None:
        super().__init__(app)
        self.dialects = dialects


class BodyLimitMiddleware(DialectMiddleware):
    """Refuses request bodies over the limit with a 413 in the dialect's shape.

    The limit is ``max_bytes``, or ``max_file_bytes`` on the paths that take file
    uploads (:meth:`Dialects.is_upload`), or a path's own (:meth:`Dialects.body_limit`:
    Anthropic's message batches, 256 MB). Checks ``Content-Length`` up front and
    counts streamed (chunked) bodies too.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        dialects: Dialects,
        max_bytes: int,
        max_file_bytes: int | None = None,
    ) -> None:
        super().__init__(app, dialects=dialects)
        self.max_bytes = max_bytes
        self.max_file_bytes = max_file_bytes or max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        rules = self.dialects.rules(scope["path"])
        if rules.body_limit is not None:
            limit = rules.body_limit
        elif rules.is_upload:
            limit = self.max_file_bytes + _MULTIPART_SLACK
        else:
            limit = self.max_bytes
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_response(scope, send, render(rules.dialect, self._too_large(rules)))
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise self._too_large(rules)
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self, rules: PathRules) -> PayloadTooLarge:
        if rules.body_limit is not None:
            return PayloadTooLarge(f"the request body is larger than {rules.body_limit} bytes")
        if rules.is_upload:
            return PayloadTooLarge(
                f"the file is larger than the limit of {self.max_file_bytes} bytes"
            )
        return PayloadTooLarge(f"the request body is larger than {self.max_bytes} bytes")


def header(scope: Scope, name: bytes) -> bytes | None:
    """The request header ``name`` (lowercase, as ASGI gives names); its last value
    when it came more than once, as ``dict(scope["headers"])`` has it."""
    found: bytes | None = None
    for key, value in scope.get("headers") or ():
        if key == name:
            found = value
    return found


async def send_response(scope: Scope, send: Send, response: Response) -> None:
    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)
