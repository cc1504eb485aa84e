"""The boundary check every request passes before any dialect sees it.

JSON bodies are parsed once here with :func:`inferq.core.inputs.loads` (bounded
nesting, finite numbers, 64-bit integers, storable text), and request paths and
query strings are refused if they carry a NUL. A request that breaks a rule gets
a 400 in the dialect's own shape and never reaches a router or the store; one that
passes is handed on unchanged, and so is a body that is not JSON at all, which each
dialect refuses in its own documented words. The body read and what was parsed of it
are kept in the scope (:data:`BODY`): a route that reads its own body
(:mod:`inferq.api.body`) takes them from there; FastAPI's body parameters parse the
same bytes again.

The routers parse as ``json.loads`` does, which reads more than UTF-8 text: a byte
order mark, UTF-16 and UTF-32 (told apart by the first bytes) and UTF-8 encoded
surrogates. A body that :func:`~inferq.core.inputs.loads` finds malformed is checked
again as the routers will read it, so none of those carries a value past the rules.
Whether a request's body is JSON is decided by every ``Content-Type`` it sends (the
routers read the first of several; any one of them saying JSON is enough here).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from inferq.api.errors import DialectMiddleware, render, send_response
from inferq.core import inputs
from inferq.core.errors import InferqError, InvalidRequest

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

#: the scope key of a JSON-typed body the guard read: ``(bytes, parsed value)``, the
#: value :data:`NOT_PARSED` where the bytes are not UTF-8 JSON (or empty, or larger
#: than :data:`KEEP_PARSED`)
BODY = "inferq.body"
#: what the guard keeps of a body it did not parse
NOT_PARSED: Any = object()
#: the largest body (bytes) whose parsed value is kept: the scope lives as long as the
#: request, and on a route that parses its body again (FastAPI's parameters) or a long
#: sync request a large parsed value would be memory held for nothing
KEEP_PARSED = 64 * 1024


def _is_json(scope: Scope) -> bool:
    """Whether the router may parse the body as JSON (as FastAPI does without a type)."""
    types = [value for key, value in scope.get("headers") or () if key == b"content-type"]
    return not types or any(_is_json_type(value) for value in types)


def _is_json_type(content_type: bytes) -> bool:
    if not content_type.strip():
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def _check(body: bytes) -> Any:
    """Check ``body`` as the routers will read it; InvalidRequest if it breaks a rule.
    The value parsed, or :data:`NOT_PARSED` when it is not UTF-8 JSON."""
    try:
        return inputs.loads(body)
    except inputs.MalformedJson:
        # not UTF-8 JSON, but json.loads may still read it: check the text it would read
        try:
            text = body.decode(json.detect_encoding(body), "surrogatepass")
        except UnicodeDecodeError:
            return NOT_PARSED  # the routers cannot read it either
        # malformed there too: not JSON at all, the dialect refuses it in its own words
        with contextlib.suppress(inputs.MalformedJson):
            inputs.loads(text)
    return NOT_PARSED


class InputGuardMiddleware(DialectMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        dialect = self.dialects.for_path(path)
        query: bytes = scope.get("query_string", b"")
        if "\x00" in path or b"%00" in query or b"\x00" in query:
            where = "the path" if "\x00" in path else "the query string"
            await send_response(
                scope,
                send,
                render(dialect, InvalidRequest(f"{where} contains a NUL character (%00)")),
            )
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            try:
                message = await receive()
            except InferqError as exc:  # the body limit, counting a streamed body
                await send_response(scope, send, render(dialect, exc))
                return
            if message["type"] != "http.request":
                # the client went away before the whole body came: nothing to check
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        parsed = NOT_PARSED
        if body.strip():
            try:
                parsed = _check(body)
            except InvalidRequest as exc:
                # the field the value is at (``payload.messages.0.content``), or the body
                # as a whole (a number the parser refused, nesting too deep: no place yet)
                refused = InvalidRequest(exc.message, param=exc.param or "body")
                await send_response(scope, send, render(dialect, refused))
                return
        scope[BODY] = (body, parsed if len(body) <= KEEP_PARSED else NOT_PARSED)
        await self.app(
            scope,
            _replay([{"type": "http.request", "body": body, "more_body": False}], receive),
            send,
        )


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
