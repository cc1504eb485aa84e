"""File downloads with HTTP ranges (RFC 9110 §14): ``Range: bytes=…`` gets a 206.

One range per request (``bytes=0-99``, ``bytes=100-``, ``bytes=-100``); a header this
does not parse, another unit or several ranges get the whole file with a 200, as the RFC
allows a server that ignores ``Range``. A range that starts past the end is a 416 in
the dialect's error shape. The bytes stream from the blob store's own range read, so a
resumed download reads only what is left.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping

from fastapi.responses import StreamingResponse

from inferq.core.errors import ClientError

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
#: what a position longer than this many digits counts as: past the end of any file
#: (``int()`` refuses text of thousands of digits)
_MAX_DIGITS = 18
_BEYOND = 10**_MAX_DIGITS


class RangeNotSatisfiable(ClientError):
    """The requested byte range is not in the file."""

    code = "range_not_satisfiable"


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``[start, stop)`` that a ``Range`` header asks of ``size`` bytes, or None for
    the whole file; :class:`RangeNotSatisfiable` when it starts past the end."""
    found = _RANGE.fullmatch((header or "").strip().replace(" ", ""))
    if found is None or found.group(1) == found.group(2) == "":
        return None
    first, last = found.groups()
    if first == "":  # the last N bytes
        return max(size - _position(last), 0), size
    start = _position(first)
    stop = size if last == "" else min(_position(last) + 1, size)
    if last != "" and _position(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable(f"the range {header} starts past the end ({size} bytes)")
    return start, stop


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _BEYOND


async def download(
    read: Callable[[int, int | None], AsyncIterator[bytes]],
    *,
    size: int,
    range_header: str | None,
    media_type: str,
    headers: Mapping[str, str],
) -> StreamingResponse:
    """A streamed download of ``size`` bytes that ``read(start, stop)`` yields: the whole
    (200) or the requested range (206). The first chunk is read before answering, so a
    missing blob is the dialect's 404, not a broken stream."""
    span = byte_range(range_header, size)
    extra = {"accept-ranges": "bytes", "content-length": str(size)}
    status = 200
    start, stop = 0, None
    if span is not None:
        start, stop = span
        status = 206
        extra["content-length"] = str(stop - start)
        extra["content-range"] = f"bytes {start}-{stop - 1}/{size}"
    chunks = read(start, stop)
    first = await anext(chunks, b"")
    return StreamingResponse(
        _prepend(first, chunks),
        status_code=status,
        media_type=media_type,
        headers={**headers, **extra},
    )


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
