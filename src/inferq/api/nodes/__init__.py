"""The node protocol: ``/node/v1/*`` (node tokens) and ``/v1/outputs/*`` (API keys), and
Infera's node endpoints over the same machinery (``/worker/*``: their errors are
Infera's, whose dialect owns the root)."""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse

from inferq.api.dialect import Dialect
from inferq.api.nodes import infera_worker
from inferq.api.nodes.router import router
from inferq.core.errors import InferqError

_UPLOAD = re.compile(r"^/node/v1/jobs/[^/]+/files/[^/]+$")


def render_error(exc: InferqError, status: int) -> JSONResponse:
    body = {"code": exc.code, "message": exc.message, "param": exc.param}
    return JSONResponse({"error": body}, status_code=status)


router.include_router(infera_worker.router)

DIALECT = Dialect(
    name="nodes",
    router=router,
    prefixes=("/node/", "/v1/outputs/"),
    render_error=render_error,
    is_upload=lambda path: bool(_UPLOAD.match(path)),
)

__all__ = ["DIALECT"]
