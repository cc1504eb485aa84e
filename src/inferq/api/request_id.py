"""Request ids: one per request, in its log lines and on its answer as ``X-Request-Id``.

A client's ``X-Request-Id`` is kept when it is 1 to 128 printable ASCII characters
(no spaces), so a caller's own id follows the request through the logs; anything else
is replaced by a new random id. The id is set in :data:`inferq.core.log_context.request_id`
for everything that runs for the request, and sent back on every answer, errors included.
"""

from __future__ import annotations

import re

from starlette.types import Message, Receive, Scope, Send

from inferq.api.middleware import HttpMiddleware
from inferq.core import log_context
from inferq.core.ids import new_hex

HEADER = b"x-request-id"
_ACCEPTED = re.compile(rb"[\x21-\x7e]{1,128}")


def request_id_from(scope: Scope) -> str:
    """The client's id when it is acceptable, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == HEADER and _ACCEPTED.fullmatch(value):
            return str(value.decode("ascii"))
    return new_hex()


class RequestIdMiddleware(HttpMiddleware):
    """Sets the request id for the request's context and adds it to the answer."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id_from(scope)
        token = log_context.request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode("ascii"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_context.request_id.reset(token)
