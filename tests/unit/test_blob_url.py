"""Which blob store ``INFERQ_BLOB_URL`` (and the job store's URL) select."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inferq.blobs import LocalBlobs, create_blobs
from inferq.blobs.postgres import PostgresBlobs
from inferq.blobs.s3 import S3Blobs, parse_url
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


@pytest.mark.parametrize("url", ["s3:/bucket", "file://relative", "/abs/path", "postgresx"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="blob_url"):
        Settings(blob_url=url)


def test_an_s3_url_names_a_bucket_and_a_prefix(tmp_path: Path) -> None:
    url = "s3://my-bucket/inferq/prod?endpoint=http://127.0.0.1:9000&region=eu-west-1"
    blobs = build_blobs(Settings(data_dir=tmp_path, database_url=PG, blob_url=url))
    assert isinstance(blobs, S3Blobs)
    assert (blobs.bucket, blobs.prefix) == ("my-bucket", "inferq/prod")
    assert parse_url(url, {}) == (
        "my-bucket",
        "inferq/prod",
        {"endpoint": "http://127.0.0.1:9000", "region": "eu-west-1"},
    )


def test_s3_settings_come_from_the_aws_variables_unless_the_url_says_otherwise() -> None:
    environ = {"AWS_ENDPOINT_URL": "http://minio:9000"}
    assert parse_url("s3://b", environ) == ("b", "", {"endpoint": "http://minio:9000"})
    assert parse_url("s3://b/?endpoint=http://other:1", environ)[2] == {
        "endpoint": "http://other:1"
    }


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://", "s3://BUCKET"),
        ("s3://b/p?colour=blue", "unknown S3 blob URL parameter 'colour'"),
        ("s3://b/../p", "invalid blob key"),
    ],
)
def test_bad_s3_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=message):
        parse_url(url, {})
