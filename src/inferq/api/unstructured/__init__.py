"""Unstructured's Platform jobs API: ``/api/v1/jobs`` and ``/api/v1/templates``.

Its jobs are core's document workflows; the node subtypes and templates they may
use are its catalogue (:mod:`inferq.api.unstructured.catalogue`).
"""

from __future__ import annotations

from inferq.api.dialect import Dialect
from inferq.api.errors import fastapi_validation
from inferq.api.unstructured.catalogue import CATALOGUE
from inferq.api.unstructured.router import router
from inferq.api.unstructured.translate import render_error
from inferq.core.workflow_meta import DIALECT as WORKFLOWS


def is_upload(path: str) -> bool:
    """``POST /api/v1/jobs/`` (multipart: the request and its files)."""
    return path.rstrip("/") == "/api/v1/jobs"


DIALECT = Dialect(
    name=WORKFLOWS,
    router=router,
    prefixes=("/api/v1/",),
    render_error=render_error,
    render_validation=fastapi_validation,
    is_upload=is_upload,
    workflows=CATALOGUE,
)

__all__ = ["DIALECT"]
