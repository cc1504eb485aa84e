"""The boundary check every request passes before any dialect sees it.

JSON bodies are parsed once here with :func:`inferq.core.inputs.loads` (bounded
nesting, finite numbers, 64-bit integers, storable text), and request paths and
query strings are refused if they carry a NUL. A request that breaks a rule gets
a 400 in the dialect's own shape and never reaches a router or the store; one that
passes is handed on unchanged (the router parses the same bytes again), and so is a
body that is not JSON at all, which each dialect refuses in its own documented words.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from inferq.api.errors import DialectMiddleware, header, render, send_response
from inferq.core import inputs
from inferq.core.errors import InferqError, InvalidRequest

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _is_json(content_type: bytes | None) -> bool:
    """Whether the router will parse the body as JSON (as FastAPI does without a type)."""
    if not content_type:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


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
        if not _is_json(header(scope, b"content-type")):
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
        if body.strip():
            try:
                inputs.loads(body)
            except inputs.MalformedJson:
                pass  # not JSON at all: the dialect refuses it in its own words
            except InvalidRequest as exc:
                await send_response(
                    scope, send, render(dialect, InvalidRequest(exc.message, param="body"))
                )
                return
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
