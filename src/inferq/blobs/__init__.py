"""File and dataset bytes: the BlobStore port and its adapters."""

from __future__ import annotations

from pathlib import Path

from inferq.blobs.base import BlobStore, BlobWriter
from inferq.blobs.local import LocalBlobs
from inferq.blobs.memory import MemoryBlobs
from inferq.core.errors import ConfigError

__all__ = ["BlobStore", "BlobWriter", "LocalBlobs", "MemoryBlobs", "create_blobs"]

_POSTGRES = ("postgresql://", "postgres://")


def create_blobs(url: str, *, database_url: str, default_dir: Path) -> BlobStore:
    """The blob store for ``url``, not yet opened.

    ``file:///PATH`` (a directory), ``postgresql://…`` (a PostgreSQL database with the
    blob tables), ``postgres`` (the job store's database, ``database_url``),
    ``s3://BUCKET/PREFIX?…`` (an S3-compatible bucket), or empty: the job store's
    database when it is PostgreSQL, else the directory ``default_dir``.
    """
    if url == "":
        if not database_url.startswith(_POSTGRES):
            return LocalBlobs(default_dir)
        url = "postgres"
    if url == "postgres":
        if not database_url.startswith(_POSTGRES):
            raise ConfigError("blob URL 'postgres' needs a PostgreSQL database URL")
        url = database_url
    if url.startswith(_POSTGRES):
        from inferq.blobs.postgres import PostgresBlobs

        return PostgresBlobs(url)
    if url.startswith("file:///"):
        return LocalBlobs(Path(url.removeprefix("file://")))
    if url.startswith("s3://"):
        from inferq.blobs.s3 import S3Blobs

        return S3Blobs(url)
    raise ConfigError(
        f"unsupported blob URL {url!r}: use file:///PATH, postgresql://…, postgres or s3://…"
    )
