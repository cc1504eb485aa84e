"""What a log line is about: the request, job, tenant and model in hand.

Context variables, set by the API's request-id middleware (``request_id``), by the
key check (``tenant``) and by the worker around each job (``job_id``, ``tenant``,
``model``); :class:`ContextFilter` copies the ones set onto every log record, where
the JSON formatter (:mod:`inferq.cli.logs`) writes them. Only the standard library.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("inferq_request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("inferq_job_id", default=None)
tenant: ContextVar[str | None] = ContextVar("inferq_tenant", default=None)
model: ContextVar[str | None] = ContextVar("inferq_model", default=None)

#: the record attributes :class:`ContextFilter` sets, and their variables
FIELDS: dict[str, ContextVar[str | None]] = {
    "request_id": request_id,
    "job_id": job_id,
    "tenant": tenant,
    "model": model,
}


class ContextFilter(logging.Filter):
    """Puts the context variables that are set on the record (as attributes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in FIELDS.items():
            value = var.get()
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True
