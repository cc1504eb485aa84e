"""Data files are this user's alone: directories 0700, files 0600, whatever the umask."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferq.blobs.local import LocalBlobs
from inferq.config import Settings
from inferq.store.sqlite import SQLiteStore
from tests.contract.test_store_contract import make_job


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("loose_umask")
def test_sqlite_files_are_private(data_dir: Path) -> None:
    async def run() -> None:
        store = SQLiteStore(data_dir / "inferq.db")
        await store.open()
        try:
            await store.insert_job(make_job())
            assert (data_dir / "inferq.db-wal").exists()
            for name in ("inferq.db", "inferq.db-wal", "inferq.db-shm"):
                assert _mode(data_dir / name) == 0o600, name
        finally:
            await store.close()

    asyncio.run(run())
    assert _mode(data_dir) == 0o700


@pytest.mark.usefixtures("loose_umask")
def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    path.touch(mode=0o644)
    path.chmod(0o644)

    async def run() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(run())
    assert _mode(path) == 0o600


@pytest.mark.usefixtures("loose_umask")
def test_blob_directories_and_files_are_private(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir)
    blobs = LocalBlobs(settings.blobs_dir)

    async def run() -> None:
        writer = blobs.writer("t-1/file-1/input.jsonl")
        await writer.write(b"data")
        await writer.commit()

    asyncio.run(run())
    for directory in (data_dir, data_dir / "blobs", data_dir / "blobs/t-1/file-1"):
        assert _mode(directory) == 0o700, directory
    assert _mode(data_dir / "blobs/t-1") == 0o700
    assert _mode(data_dir / "blobs/t-1/file-1/input.jsonl") == 0o600


@pytest.mark.usefixtures("loose_umask")
def test_signing_key_and_its_directory_are_private(data_dir: Path) -> None:
    Settings(data_dir=data_dir).signing_secret()
    assert _mode(data_dir) == 0o700
    assert _mode(data_dir / "signing.key") == 0o600
