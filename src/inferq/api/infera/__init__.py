"""Infera's API: ``/submit_job``, ``/get_result``, ``/chat/completions`` and friends.

Its paths sit at the root, so it is the dialect of every path no other one claims.
"""

from __future__ import annotations

from inferq.api.dialect import Dialect
from inferq.api.errors import fastapi_validation
from inferq.api.infera.router import router
from inferq.api.infera.translate import render_error

DIALECT = Dialect(
    name="infera",
    router=router,
    prefixes=("",),
    render_error=render_error,
    render_validation=fastapi_validation,
)

__all__ = ["DIALECT"]
