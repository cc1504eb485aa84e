"""Together's queue API: ``/v1/queue/*``."""

from __future__ import annotations

from inferq.api.together.router import router
from inferq.api.together.translate import render_error

__all__ = ["render_error", "router"]
