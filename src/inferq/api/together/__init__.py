"""Together's queue API: ``/v1/queue/*``."""

from __future__ import annotations

from inferq.api.dialect import Dialect
from inferq.api.together.router import router
from inferq.api.together.translate import render_error

DIALECT = Dialect(
    name="together", router=router, prefixes=("/v1/queue",), render_error=render_error
)

__all__ = ["DIALECT"]
