"""inferq's own admin API: ``/admin/*`` (webhook endpoints), for admin keys only."""

from __future__ import annotations

from inferq.api.admin.webhooks import render_error, router
from inferq.api.dialect import Dialect

DIALECT = Dialect(name="admin", router=router, prefixes=("/admin/",), render_error=render_error)

__all__ = ["DIALECT"]
