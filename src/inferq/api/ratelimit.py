"""Request and token limits and the in-flight bound at the API's door (policy:
:mod:`inferq.core.limits`).

:func:`admit` runs in the caller dependency, once the key is known: it spends one
request and the body's estimated tokens from the key's and its tenant's buckets, or
raises :class:`~inferq.core.limits.RateLimitExceeded` (each dialect renders it as its
429, with ``Retry-After``). :class:`RateLimitHeadersMiddleware` puts the buckets'
state on the answer, in OpenAI's headers::

    x-ratelimit-limit-requests: 600       x-ratelimit-limit-tokens: 100000
    x-ratelimit-remaining-requests: 599   x-ratelimit-remaining-tokens: 99950
    x-ratelimit-reset-requests: 100ms     x-ratelimit-reset-tokens: 30ms

A key without any limit costs nothing here: no store access, no header.
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferq.api.dialect import Dialects
from inferq.api.errors import DialectMiddleware, render, send_response
from inferq.api.middleware import HttpMiddleware
from inferq.core import inputs
from inferq.core.errors import InvalidRequest
from inferq.core.limits import (
    Overloaded,
    RateLimiter,
    RateLimitExceeded,
    Verdict,
    estimate_tokens,
)
from inferq.core.models import ApiKey

#: where the request's verdict waits for the answer's headers (in the ASGI scope's state)
STATE_KEY = "inferq_ratelimit"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def admit(request: Request, limiter: RateLimiter, key: ApiKey) -> None:
    """Spend the request's share of the key's limits; the verdict goes on the answer."""
    tokens = 0
    if request.method in _BODY_METHODS and await limiter.needs_tokens(key):
        tokens = await _tokens(request)
    state = request.scope.setdefault("state", {})
    try:
        verdict = await limiter.admit(key, tokens=tokens)
    except RateLimitExceeded as exc:
        state[STATE_KEY] = exc.verdict
        raise
    if verdict is not None:
        state[STATE_KEY] = verdict


async def _tokens(request: Request) -> int:
    """The JSON body's estimated tokens (0 for any other body, such as an upload)."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media != "application/json" and not media.endswith("+json"):
        return 0
    body = await request.body()  # already read whole by the input guard
    try:
        return estimate_tokens(inputs.loads(body))
    except (inputs.MalformedJson, InvalidRequest):
        return len(body) // 4


def duration(seconds: float) -> str:
    """``20ms``, ``1.5s``, ``6m0s``: as OpenAI writes its reset times."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def headers_of(verdict: Verdict) -> list[tuple[str, str]]:
    found = []
    for bucket in verdict.buckets:
        found += [
            (f"x-ratelimit-limit-{bucket.kind}", str(bucket.limit)),
            (f"x-ratelimit-remaining-{bucket.kind}", str(bucket.remaining)),
            (f"x-ratelimit-reset-{bucket.kind}", duration(bucket.reset)),
        ]
    return found


class RateLimitHeadersMiddleware(HttpMiddleware):
    """Adds the ``x-ratelimit-*`` headers of a limited key's request to its answer."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and STATE_KEY in state:
                headers = MutableHeaders(scope=message)
                for name, value in headers_of(state[STATE_KEY]):
                    headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


#: the paths that are never refused: health checks must answer under any load
NEVER_REFUSED = frozenset({"/healthz", "/readyz", "/metrics"})


class InflightLimitMiddleware(DialectMiddleware):
    """Answers 503 with ``Retry-After`` at once, in the path's dialect, while ``limit``
    requests are already being served by this process (``INFERQ_MAX_INFLIGHT_REQUESTS``):
    past that, more work would only slow every request down. A stream counts until it
    ends. The health checks and the metrics are never refused."""

    def __init__(self, app: ASGIApp, *, dialects: Dialects, limit: int) -> None:
        super().__init__(app, dialects=dialects)
        self.limit = limit
        self.inflight = 0

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path in NEVER_REFUSED:
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.limit:
            refusal = Overloaded("the server is answering all the requests it can; retry shortly")
            await send_response(scope, send, render(self.dialects.for_path(path), refusal))
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
