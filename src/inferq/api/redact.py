"""Keeping credentials that travel in URLs out of the logs.

A signed URL (``/v1/downloads/TOKEN``, ``/v1/uploads/TOKEN``) is a password for
as long as it is valid, and uvicorn's access log writes every request's path
and query. :class:`RedactSecrets` replaces the token, and the values of query
parameters that carry one (``token``, ``signature``, ``sig``), with
``[redacted]`` before a record is written; :func:`install` puts it on the
loggers that write request paths.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
_SIGNED_PATH = re.compile(r"(/v1/(?:downloads|uploads)/)[^/?#\s\"']+")
_SECRET_QUERY = re.compile(r"([?&](?:token|signature|sig)=)[^&#\s\"']*", re.IGNORECASE)
_KEEP_PREFIX = rf"\g<1>{REDACTED}"
#: the loggers that write request paths: uvicorn's access log and inferq's API errors
LOGGERS = ("uvicorn.access", "uvicorn.error", "inferq.api")


def redact(text: str) -> str:
    """``text`` with the secrets of signed URLs in it replaced.

    Each pattern runs only on text that holds what it cannot match without (a signed
    path's prefix; an ``=``): an access line without a secret costs two or three
    substring searches per argument instead of two substitutions.
    """
    if "/v1/downloads/" in text or "/v1/uploads/" in text:
        text = _SIGNED_PATH.sub(_KEEP_PREFIX, text)
    if "=" in text:
        text = _SECRET_QUERY.sub(_KEEP_PREFIX, text)
    return text


class RedactSecrets(logging.Filter):
    """Redacts signed-URL secrets in a record's message and string arguments.

    The arguments stay a tuple of the same length: uvicorn's access formatter
    unpacks them (client, method, path, HTTP version, status).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


def install(names: tuple[str, ...] = LOGGERS) -> None:
    """Put one :class:`RedactSecrets` on each named logger (once)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
