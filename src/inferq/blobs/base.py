"""The BlobStore port (owned by core, :mod:`inferq.core.ports`) and what its adapters share.

Adapters: :mod:`inferq.blobs.memory` (the fake), :mod:`inferq.blobs.local` (a
directory, the default on SQLite) and :mod:`inferq.blobs.postgres` (the default on a
PostgreSQL job store). All pass ``tests/contract/test_blob_contract.py``.

Bytes always move as streams of chunks, never whole files, so memory stays flat
whatever the size. A blob appears atomically: readers see the old bytes or the
new ones, never a half-written file, and a crash while writing leaves nothing.
"""

from __future__ import annotations

import re

from inferq.core.ports import CHUNK, BlobStore, BlobWriter, tenant_prefix

__all__ = ["CHUNK", "BlobStore", "BlobWriter", "check_key", "tenant_prefix"]

_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def check_key(key: str) -> str:
    """``key`` when it is a relative path of plain names; ValueError otherwise."""
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"invalid blob key {key!r}")
    return key
