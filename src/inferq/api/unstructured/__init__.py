"""Unstructured's Platform jobs API: ``/api/v1/jobs`` and ``/api/v1/templates``."""

from __future__ import annotations

from inferq.api.unstructured.router import router
from inferq.api.unstructured.translate import render_error

__all__ = ["render_error", "router"]
