"""Which blob store ``INFERQ_BLOB_URL`` (and the job store's URL) select."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inferq.blobs import LocalBlobs, create_blobs
from inferq.blobs.postgres import PostgresBlobs
from inferq.config import Settings
from inferq.core.errors import ConfigError
from inferq.runtime import build_blobs

PG = "postgresql://inferq@db:5432/inferq"


def test_sqlite_keeps_the_data_dir(tmp_path: Path) -> None:
    blobs = build_blobs(Settings(data_dir=tmp_path))
    assert isinstance(blobs, LocalBlobs)
    assert blobs.root == tmp_path / "blobs"


def test_a_postgres_job_store_puts_blobs_in_its_database(tmp_path: Path) -> None:
    blobs = build_blobs(Settings(data_dir=tmp_path, database_url=PG))
    assert isinstance(blobs, PostgresBlobs)
    assert blobs.url == PG


def test_the_blob_url_wins(tmp_path: Path) -> None:
    local = build_blobs(Settings(database_url=PG, blob_url=f"file://{tmp_path}/b"))
    assert isinstance(local, LocalBlobs)
    assert local.root == tmp_path / "b"
    other = build_blobs(Settings(data_dir=tmp_path, blob_url="postgres://blobs@db2/b"))
    assert isinstance(other, PostgresBlobs)
    assert other.url == "postgres://blobs@db2/b"
    same = build_blobs(Settings(database_url=PG, blob_url="postgres"))
    assert isinstance(same, PostgresBlobs)
    assert same.url == PG


def test_postgres_needs_a_postgres_job_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL database URL"):
        create_blobs("postgres", database_url="", default_dir=tmp_path)


@pytest.mark.parametrize("url", ["s3://bucket", "file://relative", "/abs/path", "postgresx"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="blob_url"):
        Settings(blob_url=url)
