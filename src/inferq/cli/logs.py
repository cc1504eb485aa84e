"""How a long-running command (``inferq serve``, ``inferq worker``) writes its logs.

``text`` (the default): ``TIME LEVEL LOGGER: MESSAGE``. ``json``: one JSON object per
line with ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and
``request_id``, ``job_id``, ``tenant`` and ``model`` where they are known
(:mod:`inferq.core.log_context`), ``exception`` when there is one. The context filter
that puts those on the records sits on the JSON handler, so it sees the records of
every logger that propagates to the root (uvicorn's too, when uvicorn is told not to
configure its own handlers); the text format writes none of them and has no filter.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from inferq.core.log_context import FIELDS, ContextFilter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, as :class:`logging.Formatter` writes it, each second's time
    formatted once (the standard formatter formats the local time anew for every record:
    about a sixth of a line's instructions), and a line without an exception or a stack
    written straight from the record's fields (the standard one, from a ``%`` of the
    record's whole ``__dict__`` after looking the format over again: half of the rest)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = message = record.getMessage()
        record.asctime = asctime = self.formatTime(record)
        return f"{asctime} {record.levelname} {record.name}: {message}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime(self.default_time_format, self.converter(second)))
            self._second = cached
        return f"{cached[1]},{int(record.msecs):03d}"  # as the default_msec_format writes it


def configure(*, level: str, fmt: str) -> None:
    """Log to stderr at ``level``, as ``text`` or ``json``."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.addFilter(ContextFilter())
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # neither format writes the thread, the process or the calling file and line, so
    # records need not look them up (the logging HOWTO's "Optimization" table; nothing in
    # inferq logs with stack_info): a "queued" line is made and formatted in 6-7 µs, not 9
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    # warnings too, so that every line of a JSON log is JSON
    logging.captureWarnings(True)
