"""uvicorn's access log lines, written for less: :class:`AccessFormatter`.

uvicorn's own formatter copies each record twice (``copy.copy``) and looks the status
phrase up in :class:`http.HTTPStatus` for every line, 15 µs of a request's time. This
one writes the very same line from one dict of the record's attributes and a table of
phrases; colours (a terminal) still go through uvicorn's own code.
"""

from __future__ import annotations

import http
import logging

from uvicorn.logging import AccessFormatter as UvicornAccessFormatter

#: ``200 OK``, ``404 Not Found``: as uvicorn writes a status (its code alone when unknown)
_STATUS = {int(s): f"{int(s)} {s.phrase}" for s in http.HTTPStatus}


class AccessFormatter(UvicornAccessFormatter):
    """uvicorn's access formatter, without the copies of the record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        if self.use_colors:
            return str(super().formatMessage(record))
        client_addr, method, full_path, http_version, status_code = record.args  # type: ignore[misc]
        code = int(status_code)  # type: ignore[arg-type]
        defaults = self._style._defaults  # type: ignore[attr-defined]
        values = {**defaults, **record.__dict__} if defaults else dict(record.__dict__)
        values["client_addr"] = client_addr
        values["request_line"] = f"{method} {full_path} HTTP/{http_version}"
        values["status_code"] = _STATUS.get(code) or f"{code} "
        values["levelprefix"] = record.levelname + ":" + " " * (8 - len(record.levelname))
        return str(self._style._fmt % values)
