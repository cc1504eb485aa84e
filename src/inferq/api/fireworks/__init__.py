"""Fireworks' dataset and batch inference job API: ``/v1/accounts/{account_id}/…``.

``/v1/uploads/{token}`` (a signed PUT) is Fireworks' too, but not its prefix: what
the body limit and the input guard answer there is in OpenAI's shape, as before; the
route itself answers its own errors in Fireworks' shape.
"""

from __future__ import annotations

from inferq.api.dialect import Dialect
from inferq.api.fireworks.batch_format import FireworksBatchFormat
from inferq.api.fireworks.router import router
from inferq.api.fireworks.translate import STATUSES, render_error


def is_upload(path: str) -> bool:
    """``POST .../datasets/{id}:upload`` (multipart) and the signed ``PUT /v1/uploads/…``."""
    return path.endswith(":upload") or path.startswith("/v1/uploads/")


DIALECT = Dialect(
    name="fireworks",
    router=router,
    prefixes=("/v1/accounts/", "/v1/downloads/"),
    render_error=render_error,
    statuses=STATUSES,
    is_upload=is_upload,
    batch_format=FireworksBatchFormat(),
)

__all__ = ["DIALECT"]
