"""The BlobStore port (owned by core, :mod:`inferq.core.ports`) and what its adapters share.

Adapters: :mod:`inferq.blobs.memory` (the fake), :mod:`inferq.blobs.local` (a
directory, the default on SQLite), :mod:`inferq.blobs.postgres` (the default on a
PostgreSQL job store) and :mod:`inferq.blobs.s3` (an S3-compatible bucket). All pass
``tests/contract/test_blob_contract.py``.

Bytes always move as streams of chunks, never whole files, so memory stays flat
whatever the size. A blob appears atomically: readers see the old bytes or the
new ones, never a half-written file, and a crash while writing leaves nothing.
"""

from __future__ import annotations

import re

from inferq.core.ports import CHUNK, BlobStore, BlobWriter, tenant_prefix

__all__ = ["CHUNK", "BlobStore", "BlobWriter", "check_key", "span", "tenant_prefix"]

_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def check_key(key: str) -> str:
    """``key`` when it is a relative path of plain names; ValueError otherwise."""
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid blob key {key!r}")
    return key


def span(size: int, start: int, stop: int | None) -> tuple[int, int]:
    """The byte range ``[start, stop)`` of a blob of ``size`` bytes, cut at its end."""
    if start < 0 or (stop is not None and stop < 0):
        raise ValueError(f"invalid byte range {start}..{stop}")
    end = size if stop is None else min(stop, size)
    return min(start, end), end
