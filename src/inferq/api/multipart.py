"""A streaming ``multipart/form-data`` reader.

File uploads arrive as multipart bodies. Starlette's ``request.form()`` spools
each file to a temporary file before the endpoint sees it; this reader instead
hands a part's bytes on as they arrive, so an upload goes straight from the
socket into the blob store and memory stays flat whatever the file's size.

The parsing is ``python-multipart``'s push-style :class:`MultipartParser`: it is
fed each chunk of ``request.stream()`` and calls back with header and data
slices, keeping only a delimiter's length of look-behind itself. This module
adds the pull side: the callbacks' events go into a small queue that the async
iterators below drain, reading the next chunk only when it is empty, so at most
one network chunk is held at a time. It also adds the limits (:data:`MAX_HEADERS`
per part, :data:`MAX_FIELD` per plain field) and turns every malformed or
truncated body into an :class:`InvalidRequest`.

Use: ``async for part in MultipartReader(stream, content_type): ...``; read a
part with :meth:`Part.chunks` or :meth:`Part.text` before asking for the next
one (a part left unread is skipped).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from inferq.core.errors import InvalidRequest

#: the most bytes the headers of one part may take
MAX_HEADERS = 16 * 1024
#: the most bytes a plain (non-file) field may hold
MAX_FIELD = 64 * 1024


def form_body(properties: dict[str, Any], *, required: list[str]) -> dict[str, Any]:
    """The OpenAPI request body of an endpoint that reads its form with this reader
    (FastAPI's ``Form()`` would read it whole), for the route's ``openapi_extra``."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }


def _options(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="file"; filename="a.jsonl"`` -> ("form-data", {name, filename}).

    ``value`` holds the header's raw bytes as latin-1 (a lossless round trip), so
    UTF-8 parameters such as file names come back whole.
    """
    kind, options = parse_options_header(value)
    params = {k.decode("latin-1").lower(): v.decode("utf-8", "replace") for k, v in options.items()}
    return kind.decode("latin-1").lower(), params


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` content type; InvalidRequest otherwise."""
    kind, params = _options(content_type or "")
    boundary = params.get("boundary", "")
    if kind != "multipart/form-data" or not boundary or len(boundary) > 200:
        raise InvalidRequest(
            "the body must be multipart/form-data (send the file as a form field)",
            param="file",
        )
    return boundary.encode("latin-1")


@dataclass
class Part:
    """One field of the form: its name, file name (for files) and bytes."""

    name: str
    filename: str | None
    content_type: str | None
    _reader: MultipartReader

    def chunks(self) -> AsyncIterator[bytes]:
        """The part's bytes, in the pieces they arrived in (read them once)."""
        return self._reader._body()

    async def text(self, *, limit: int = MAX_FIELD) -> str:
        """The part's bytes as UTF-8 text, refused past ``limit`` bytes."""
        data = bytearray()
        async for chunk in self.chunks():
            data += chunk
            if len(data) > limit:
                raise InvalidRequest(f"{self.name}: longer than {limit} bytes", param=self.name)
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise InvalidRequest(f"{self.name}: not valid UTF-8", param=self.name) from None


class _Mark(Enum):
    PART_END = "part end"
    END = "end"


#: what the parser's callbacks queue: a part's headers are done, its bytes, or a mark
_Event = Part | bytes | _Mark


class MultipartReader:
    """Reads the parts of a ``multipart/form-data`` body from a stream of chunks."""

    def __init__(self, stream: AsyncIterator[bytes], content_type: str | None) -> None:
        self._stream = stream
        self._events: deque[_Event] = deque()
        self._eof = False
        self._in_body = False
        # the current part's headers, as raw bytes
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._header_size = 0
        self._parser = MultipartParser(
            boundary_of(content_type),
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": lambda: self._events.append(_Mark.PART_END),
                "on_end": lambda: self._events.append(_Mark.END),
            },
        )

    def __aiter__(self) -> AsyncIterator[Part]:
        return self._parts()

    # -- the pull side

    async def _next(self) -> _Event:
        """The next event, feeding the parser from the stream while none is queued."""
        while not self._events:
            chunk = None if self._eof else await anext(self._stream, None)
            if chunk is None:
                self._eof = True
                raise InvalidRequest(
                    "the multipart body ended before its closing boundary", param="file"
                )
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise InvalidRequest(f"malformed multipart body: {exc}", param="file") from None
        return self._events.popleft()

    async def _parts(self) -> AsyncIterator[Part]:
        while True:
            async for _ in self._body():  # skip what the caller left unread
                pass
            event = await self._next()
            if event is _Mark.END:
                return
            if isinstance(event, Part):
                self._in_body = True
                yield event

    async def _body(self) -> AsyncIterator[bytes]:
        """The current part's bytes, up to the end of the part."""
        while self._in_body:
            event = await self._next()
            if isinstance(event, bytes):
                yield event
            else:
                self._in_body = False

    # -- the parser's callbacks

    def _on_part_begin(self) -> None:
        self._headers.clear()
        self._header_size = 0

    def _count(self, size: int) -> None:
        self._header_size += size
        if self._header_size > MAX_HEADERS:
            raise InvalidRequest("a multipart part has too many headers", param="file")

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition", b"").decode("latin-1")
        kind, params = _options(disposition)
        if kind != "form-data" or "name" not in params:
            raise InvalidRequest(
                "every multipart part needs Content-Disposition: form-data with a name",
                param="file",
            )
        content_type = self._headers.get(b"content-type")
        self._events.append(
            Part(
                name=params["name"],
                filename=params.get("filename"),
                content_type=None
                if content_type is None
                else content_type.decode("utf-8", "replace"),
                _reader=self,
            )
        )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(bytes(data[start:end]))
