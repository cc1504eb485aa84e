"""What route handlers get injected: the services and the calling key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from inferq.api.ratelimit import admit
from inferq.config import Settings
from inferq.core import log_context
from inferq.core.batches import BatchService
from inferq.core.errors import AuthenticationFailed
from inferq.core.files import FileService
from inferq.core.keys import KeyService
from inferq.core.limits import RateLimiter
from inferq.core.models import ApiKey
from inferq.core.node_work import NodeWork
from inferq.core.nodes import TOKEN_PREFIX, NodeService
from inferq.core.service import JobService
from inferq.core.webhooks import WebhookService
from inferq.core.workflows import WorkflowService
from inferq.engines.registry import ModelRegistry
from inferq.runner.metrics import Metrics


@dataclass(frozen=True)
class Services:
    """What a route may call: the services of the runtime, never its store."""

    settings: Settings
    registry: ModelRegistry
    jobs: JobService
    keys: KeyService
    #: request and token limits (:mod:`inferq.core.limits`)
    limits: RateLimiter
    files: FileService
    batches: BatchService
    workflows: WorkflowService
    #: the readiness probe's two questions: does the store answer, are the models loaded
    store_answers: Callable[[], Awaitable[bool]]
    models_loaded: Callable[[], bool]
    #: ``GET /metrics``: this process's metrics, with the store's queue gauges
    metrics_text: Callable[[], Awaitable[bytes]]
    #: this process's counters (the node protocol counts its claims and results)
    metrics: Metrics
    #: tenants' webhook endpoints and their delivery history (the admin API, the console)
    webhooks: WebhookService
    #: node credentials and the node protocol (``/node/v1``)
    nodes: NodeService
    node_work: NodeWork


async def get_services(request: Request) -> Services:
    # async, although it awaits nothing: FastAPI runs a plain-def dependency in
    # its thread pool, a thread hop on every request for an attribute read.
    services: Services = request.app.state.services
    return services


def api_key_from(request: Request) -> str | None:
    """The key from ``Authorization: Bearer``, ``x-api-key`` (Anthropic's), ``api_key``
    or ``unstructured-api-key``."""
    headers = request.headers
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return (
        headers.get("x-api-key")
        or headers.get("api_key")
        or headers.get("unstructured-api-key")
        or None
    )


async def get_caller(request: Request) -> ApiKey:
    # the services without a dependency of their own: each one FastAPI solves costs a
    # request 6-12 µs
    services = await get_services(request)
    secret = api_key_from(request)
    if secret is not None and secret.startswith(TOKEN_PREFIX):
        raise AuthenticationFailed("a node token does not open client endpoints: use an API key")
    caller = await services.keys.authenticate(secret)
    log_context.tenant.set(caller.tenant)  # the request's log lines name its tenant
    await admit(request, services.limits, caller)
    return caller


ServicesDep = Annotated[Services, Depends(get_services)]
CallerDep = Annotated[ApiKey, Depends(get_caller)]
