"""The console's pages for admin keys only, keys and nodes (to any other key they do not
exist: a 404)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.responses import RedirectResponse

from inferq.api.console.auth import ViewerDep, console_state, form_of
from inferq.api.console.render import PREFIX, ConsoleRoute, page, secure
from inferq.api.console.session import Viewer
from inferq.api.deps import ServicesDep
from inferq.api.routing import Router
from inferq.core.errors import Conflict, InvalidRequest
from inferq.core.inputs import check_text
from inferq.core.keys import KeyService

router = Router(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


async def _keys_page(
    request: Request,
    viewer: Viewer,
    services: ServicesDep,
    *,
    created: tuple[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    context = {
        "viewer": viewer,
        "nav": "keys",
        "keys": await services.keys.list(),
        "created": created,
        "error": error,
    }
    return page(request, "keys.html", context, status_code=status_code)


@router.get("/keys")
async def keys(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    KeyService.require_admin(viewer.key)
    return await _keys_page(request, viewer, services)


@router.post("/keys")
async def create_key(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    """Create a key; its secret is shown on this answer only (never stored)."""
    KeyService.require_admin(viewer.key)
    form = await form_of(request, viewer)
    name, tenant = form.get("name", ""), form.get("tenant", "").strip() or None
    try:
        for param, value in (("name", name), ("tenant", tenant or "")):
            check_text(value, param=param, what="the form")
        key, secret = await services.keys.create(
            name=name, tenant=tenant, admin=form.get("admin") == "on"
        )
    except (InvalidRequest, Conflict) as exc:
        return await _keys_page(request, viewer, services, error=exc.message, status_code=400)
    console_state(request).keys.forget()
    return await _keys_page(request, viewer, services, created=(key.name, secret))


async def _revoke(
    request: Request, viewer: Viewer, revoke: Callable[[], Awaitable[object]], back: str
) -> Response:
    """Check the form, then revoke (a key or a node) and go back to the listing."""
    await form_of(request, viewer)
    await revoke()
    return secure(RedirectResponse(PREFIX + back, status_code=303))


@router.post("/keys/{key_id}/revoke")
async def revoke_key(
    request: Request, key_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    KeyService.require_admin(viewer.key)
    response = await _revoke(request, viewer, lambda: services.keys.revoke(key_id), "/keys")
    console_state(request).keys.forget()
    return response


@router.get("/nodes")
async def nodes(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    """The nodes (machines that pull work over HTTP) and what each last reported."""
    KeyService.require_admin(viewer.key)
    context = {
        "viewer": viewer,
        "nav": "nodes",
        "nodes": await services.nodes.list(),
        "now": services.jobs.clock(),
    }
    return page(request, "nodes.html", context, live="_nodes.html")


@router.post("/nodes/{node_id}/revoke")
async def revoke_node(
    request: Request, node_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    KeyService.require_admin(viewer.key)
    return await _revoke(request, viewer, lambda: services.nodes.revoke(node_id), "/nodes")
