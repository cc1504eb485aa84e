"""The CLI on a real SQLite data directory, in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferq import __version__
from inferq.cli import app
from inferq.core.keys import KeyService
from inferq.core.states import JobState
from inferq.store.sqlite import SQLiteStore
from tests.contract.test_store_contract import make_job

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_version() -> None:
    code, out, _ = invoke("--version")
    assert code == 0 and __version__ in out


def test_keys_create_prints_only_the_key_and_it_authenticates(data_dir: Path) -> None:
    code, out, err = invoke("keys", "create", "--name", "alice", "--data-dir", str(data_dir))
    assert code == 0
    secret = out.strip()
    assert secret.startswith("iq-") and "\n" not in secret
    assert "tenant alice" in err

    async def check() -> str:
        store = SQLiteStore(data_dir / "inferq.db")
        await store.open()
        try:
            return (await KeyService(store).authenticate(secret)).tenant
        finally:
            await store.close()

    assert asyncio.run(check()) == "alice"
    code, _, err = invoke("keys", "create", "--name", "alice", "--data-dir", str(data_dir))
    assert code == 1 and "already exists" in err


def test_keys_list_and_revoke(data_dir: Path) -> None:
    invoke("keys", "create", "--name", "bob", "--tenant", "acme", "--data-dir", str(data_dir))
    code, out, _ = invoke("keys", "list", "--data-dir", str(data_dir))
    assert code == 0 and "bob" in out and "acme" in out
    code, out, _ = invoke("keys", "revoke", "bob", "--data-dir", str(data_dir))
    assert code == 0 and "revoked" in out
    code, _, err = invoke("keys", "revoke", "nobody", "--data-dir", str(data_dir))
    assert code == 1 and "no key" in err


def test_jobs_list_show_cancel(data_dir: Path) -> None:
    async def seed() -> str:
        store = SQLiteStore(data_dir / "inferq.db")
        await store.open()
        try:
            return (await store.insert_job(make_job(text="seeded prompt"))).id
        finally:
            await store.close()

    job_id = asyncio.run(seed())
    code, out, _ = invoke("jobs", "list", "--data-dir", str(data_dir))
    assert code == 0 and "queued" in out
    code, out, _ = invoke("jobs", "show", job_id, "--data-dir", str(data_dir))
    assert code == 0 and "seeded prompt" in out
    code, out, _ = invoke("jobs", "cancel", job_id, "--data-dir", str(data_dir))
    assert code == 0 and JobState.CANCELLED.value in out
    code, _, err = invoke("jobs", "cancel", job_id, "--data-dir", str(data_dir))
    assert code == 1 and "already cancelled" in err
    code, _, err = invoke("jobs", "list", "--state", "bogus", "--data-dir", str(data_dir))
    assert code == 2 and "unknown state" in err


def test_models_reads_a_models_file(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[models.fake]\nengine = "fake"\nslots = 3\n')
    code, out, _ = invoke("models", "--models", str(models))
    assert code == 0 and "fake" in out and "3" in out
    models.write_text('[models.x]\nengine = "warp"\n')
    code, _, err = invoke("models", "--models", str(models))
    assert code == 2 and "warp" in err
