"""Liveness and readiness probes (no key needed)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from inferq.api.deps import ServicesDep
from inferq.api.routing import Router

router = Router(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """The store answers and every model this process serves is loaded."""
    store_ok = await services.store_answers()
    models_ok = services.models_loaded()
    ready = store_ok and models_ok
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "store": store_ok, "models": models_ok},
        status_code=200 if ready else 503,
    )
