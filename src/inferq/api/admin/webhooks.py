"""``/admin/webhooks``: tenants' webhook endpoints and their deliveries, for admin keys.

The same operations as ``inferq webhooks create|list|delete|deliveries``. The signing
secret is in the answer to the create, and never again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from inferq.api.deps import ServicesDep, api_key_from
from inferq.api.routing import Router
from inferq.core.errors import AuthenticationFailed, InferqError
from inferq.core.models import ApiKey
from inferq.core.webhooks import delivery_view, public

router = Router(prefix="/admin", tags=["admin"])


async def get_admin(request: Request, services: ServicesDep) -> ApiKey:
    key = await services.keys.authenticate(api_key_from(request))
    if not key.admin:
        raise AuthenticationFailed("an admin API key is required")
    return key


AdminDep = Annotated[ApiKey, Depends(get_admin)]


def render_error(exc: InferqError, status: int) -> JSONResponse:
    """``{"error": {"message", "type", "param", "code"}}``."""
    body = {"message": exc.message, "type": exc.code, "param": exc.param, "code": exc.code}
    return JSONResponse({"error": body}, status_code=status)


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=2000)
    #: the event types to send; empty or left out: every one
    events: list[str] = Field(default_factory=list, max_length=50)


@router.post("/webhooks", status_code=201)
async def create_endpoint(
    body: EndpointCreate, _: AdminDep, services: ServicesDep
) -> dict[str, Any]:
    endpoint = await services.webhooks.create(tenant=body.tenant, url=body.url, events=body.events)
    return {**public(endpoint), "secret": endpoint.secret}


@router.get("/webhooks")
async def list_endpoints(
    _: AdminDep, services: ServicesDep, tenant: str | None = None
) -> dict[str, Any]:
    found = await services.webhooks.endpoints(tenant=tenant)
    return {"object": "list", "data": [public(e) for e in found]}


@router.delete("/webhooks/{endpoint_id}")
async def delete_endpoint(endpoint_id: str, _: AdminDep, services: ServicesDep) -> dict[str, Any]:
    await services.webhooks.delete(endpoint_id, tenant=None)
    return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}


@router.get("/webhooks/{endpoint_id}/deliveries")
async def list_deliveries(
    endpoint_id: str,
    _: AdminDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    found = await services.webhooks.deliveries(endpoint_id, tenant=None, limit=limit)
    return {"object": "list", "data": [delivery_view(d) for d in found]}
