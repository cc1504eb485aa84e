"""The streaming multipart reader, on bodies httpx encodes, cut into chunks of every size."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from inferq.api.multipart import MultipartReader, boundary_of
from inferq.core.errors import InvalidRequest


def encode(data: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", data=data, files=files)
    return request.read(), request.headers["content-type"]


async def chunked(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def read_form(
    body: bytes, content_type: str, size: int
) -> dict[str, tuple[str | None, bytes]]:
    form: dict[str, tuple[str | None, bytes]] = {}
    async for part in MultipartReader(chunked(body, size), content_type):
        form[part.name] = (part.filename, b"".join([c async for c in part.chunks()]))
    return form


# a file whose bytes hold CRLFs, dashes and a near-delimiter
PAYLOAD = b'{"a": 1}\r\n--\r\n-- not the boundary\r\n' * 50 + b"\x00\xff end"


@pytest.mark.parametrize("size", [1, 2, 7, 64, 1000, 1 << 16])
async def test_fields_and_file_whatever_the_chunk_size(size: int) -> None:
    body, content_type = encode({"purpose": "batch"}, {"file": ("in.jsonl", PAYLOAD)})
    form = await read_form(body, content_type, size)
    assert form == {"purpose": (None, b"batch"), "file": ("in.jsonl", PAYLOAD)}


async def test_an_empty_file_and_unread_parts_are_skipped() -> None:
    body, content_type = encode({"a": "1", "b": "2"}, {"file": ("e.jsonl", b"")})
    names = []
    async for part in MultipartReader(chunked(body, 5), content_type):
        names.append((part.name, part.filename))
        if part.name == "file":
            assert [c async for c in part.chunks()] == []
    assert names == [("a", None), ("b", None), ("file", "e.jsonl")]


async def test_a_truncated_body_is_an_invalid_request() -> None:
    body, content_type = encode({"purpose": "batch"}, {"file": ("in.jsonl", PAYLOAD)})
    with pytest.raises(InvalidRequest, match="ended before"):
        await read_form(body[:-20], content_type, 64)


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "multipart/form-data", "multipart/mixed; boundary=x"],
)
def test_only_multipart_form_data_with_a_boundary(content_type: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        boundary_of(content_type)
    assert caught.value.param == "file"


def test_a_quoted_boundary() -> None:
    assert boundary_of('multipart/form-data; charset=utf-8; boundary="a b;c"') == b"a b;c"


def raw(boundary: str, *parts: str, end: str = "--\r\n") -> bytes:
    """A body written by hand: each part is its headers, a blank line, then its value."""
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + f"--{boundary}{end}"
    return body.encode()


@pytest.mark.parametrize("size", [1, 3, 1 << 16])
async def test_a_quoted_boundary_utf8_names_and_an_epilogue(size: int) -> None:
    body = raw(
        "a b;c",
        'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch',
        'content-disposition: form-data; name="file"; filename="dé.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n{}\r\n",
        end="--\r\nan epilogue, ignored\r\n",
    )
    content_type = 'multipart/form-data; boundary="a b;c"'
    parts = []
    async for part in MultipartReader(chunked(b"\r\n" + body, size), content_type):
        data = b"".join([c async for c in part.chunks()])
        parts.append((part.name, part.filename, part.content_type, data))
    assert parts == [
        ("purpose", None, None, b"batch"),
        ("file", "dé.jsonl", "application/jsonl", b"{}\r\n"),
    ]


async def test_an_empty_form() -> None:
    content_type = "multipart/form-data; boundary=x"
    assert [p async for p in MultipartReader(chunked(b"--x--\r\n", 2), content_type)] == []


async def test_the_body_streams_before_the_stream_ends() -> None:
    body, content_type = encode({}, {"file": ("in.jsonl", PAYLOAD)})
    pulled = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal pulled
        async for chunk in chunked(body, 64):
            pulled += 1
            yield chunk

    async for part in MultipartReader(counted(), content_type):
        async for _ in part.chunks():
            break
        assert pulled < len(body) // 64 // 2


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (raw("x", 'Content-Disposition: form-data; name="a"\r\n\r\n1', end=""), "ended before"),
        (b'--x\r\nContent-Disposition: form-data; name="a"\r\n', "ended before"),
        (b"", "ended before"),
        (raw("x", "Content-Disposition: form-data\r\n\r\n1"), "with a name"),
        (raw("x", "\r\n1"), "with a name"),
        (raw("x", f"X-Pad: {'p' * 4000}\r\n" * 5 + "\r\n1"), "too many headers"),
        (b"--y\r\n\r\n1\r\n--y--\r\n", "malformed"),
    ],
)
async def test_bad_bodies_are_invalid_requests(body: bytes, match: str) -> None:
    with pytest.raises(InvalidRequest, match=match) as caught:
        async for part in MultipartReader(chunked(body, 7), "multipart/form-data; boundary=x"):
            await part.text()
    assert caught.value.param == "file"
