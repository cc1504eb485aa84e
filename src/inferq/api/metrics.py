"""``GET /metrics`` (Prometheus' text format) and the middleware that counts HTTP requests.

The endpoint answers an admin API key, or ``INFERQ_METRICS_TOKEN`` sent as a Bearer
token (compared in constant time); anything else gets a 401 that says nothing more.
The numbers are the process's own (:class:`~inferq.runner.metrics.Metrics`), with the
queue gauges read from the store at each scrape.
"""

from __future__ import annotations

import hmac
import time

from fastapi import Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferq.api.deps import ServicesDep, api_key_from
from inferq.api.dialect import Dialects
from inferq.api.middleware import HttpMiddleware
from inferq.api.routing import Router
from inferq.core.errors import AuthenticationFailed
from inferq.core.keys import KeyService
from inferq.runner.metrics import CONTENT_TYPE, Metrics

router = Router(tags=["metrics"])

#: paths that belong to inferq itself, not to a dialect: their ``dialect`` label
OWN_PATHS = ("/metrics", "/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/console")
OWN = "inferq"


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """The process's metrics, for an admin key or the metrics token."""
    await authorize_scrape(request, token=services.settings.metrics_token, keys=services.keys)
    return Response(await services.metrics_text(), media_type=CONTENT_TYPE)


async def authorize_scrape(request: Request, *, token: str, keys: KeyService) -> None:
    """Let an admin key or the metrics token (compared in constant time) through;
    :class:`AuthenticationFailed` for anything else."""
    secret = api_key_from(request)
    if token and secret and hmac.compare_digest(secret.encode(), token.encode()):
        return
    key = await keys.authenticate(secret)
    if not key.admin:
        raise AuthenticationFailed("an admin API key or the metrics token is required")


def dialect_label(dialects: Dialects, path: str) -> str:
    """The dialect that owns ``path`` (the longest prefix), or ``inferq`` for its own."""
    if path.startswith(OWN_PATHS):
        return OWN
    return dialects.for_path(path).name


class HttpMetricsMiddleware(HttpMiddleware):
    """Counts each HTTP request by dialect and status, and times it to its last byte."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, dialects: Dialects) -> None:
        super().__init__(app)
        self.metrics = metrics
        self.dialects = dialects

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # an app that raised before answering

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            dialect = dialect_label(self.dialects, scope["path"])
            self.metrics.http_requests.labels(dialect, str(status)).inc()
            self.metrics.http_seconds.labels(dialect).observe(time.perf_counter() - started)
