"""The console's webhooks pages: a tenant's endpoints (every tenant's for an admin key)
and each endpoint's delivery history. Endpoints are made and deleted with
``inferq webhooks`` or the admin API; their secrets are never shown here."""

from __future__ import annotations

from fastapi import Request, Response

from inferq.api.console.auth import ViewerDep
from inferq.api.console.render import PREFIX, ConsoleRoute, page
from inferq.api.deps import ServicesDep
from inferq.api.routing import Router

router = Router(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


@router.get("/webhooks")
async def webhooks(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    context = {
        "viewer": viewer,
        "nav": "webhooks",
        "endpoints": await services.webhooks.endpoints(tenant=viewer.scope),
    }
    return page(request, "webhooks.html", context)


@router.get("/webhooks/{endpoint_id}")
async def deliveries(
    request: Request, endpoint_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    found = await services.webhooks.deliveries(endpoint_id, tenant=viewer.scope, limit=100)
    endpoint = next(
        e for e in await services.webhooks.endpoints(tenant=viewer.scope) if e.id == endpoint_id
    )
    context = {
        "viewer": viewer,
        "nav": "webhooks",
        "endpoint": endpoint,
        "deliveries": found,
        "now": services.jobs.clock(),
    }
    return page(request, "webhook.html", context, live="_deliveries.html")
