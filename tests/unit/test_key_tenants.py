"""Keys and tenants: a key's default tenant never joins an existing one, the admin flag is
shown, and the first-start admin key is printed once, off stdout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferq import cli
from inferq.config import Settings
from inferq.core.errors import NotFound
from inferq.core.keys import KeyService, TenantExists
from inferq.store.memory import MemoryStore
from inferq.store.sqlite import SQLiteStore
from tests.contract.test_store_contract import make_job

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli.app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def keys() -> KeyService:
    store = MemoryStore()
    await store.open()
    return KeyService(store)


async def test_a_key_without_tenant_does_not_join_the_admin_tenant(keys: KeyService) -> None:
    await keys.create(name="admin", tenant="default", admin=True)
    with pytest.raises(TenantExists, match="'default'"):
        await keys.create(name="default")
    # joining is explicit
    key, _ = await keys.create(name="default", tenant="default")
    assert key.tenant == "default" and not key.admin


async def test_a_key_without_tenant_does_not_join_a_tenant_with_only_jobs(
    keys: KeyService,
) -> None:
    await keys.store.insert_job(make_job(tenant="acme"))
    with pytest.raises(TenantExists):
        await keys.create(name="acme")
    key, _ = await keys.create(name="fresh")
    assert key.tenant == "fresh"


async def test_a_revoked_tenant_is_still_a_tenant(keys: KeyService) -> None:
    await keys.create(name="old", tenant="team")
    await keys.revoke("old")
    with pytest.raises(TenantExists):
        await keys.create(name="team")


async def test_require_admin(keys: KeyService) -> None:
    admin, _ = await keys.create(name="admin", tenant="default", admin=True)
    user, _ = await keys.create(name="user")
    assert KeyService.require_admin(admin) is admin
    with pytest.raises(NotFound):
        KeyService.require_admin(user)


def test_cli_refuses_the_admin_tenant_by_default_and_lists_admins(data_dir: Path) -> None:
    cli._first_start(Settings(data_dir=data_dir))
    code, out, err = invoke("keys", "create", "--name", "default", "--data-dir", str(data_dir))
    assert code == 1 and out == ""
    assert "--tenant default" in err and "another --name" in err
    code, out, err = invoke(
        "keys", "create", "--name", "default", "--tenant", "default", "--data-dir", str(data_dir)
    )
    assert code == 0 and out.startswith("iq-") and "tenant default" in err
    code, out, _ = invoke("keys", "list", "--data-dir", str(data_dir))
    assert code == 0 and "admin" in out
    cells = [[c.strip() for c in line.split("│")] for line in out.splitlines() if "key_" in line]
    header = [c.strip() for c in next(x for x in out.splitlines() if "tenant" in x).split("┃")]
    admin = {row[header.index("name")]: row[header.index("admin")] for row in cells}
    assert admin == {"admin": "yes", "default": ""}


def test_cli_help_says_how_to_join_a_tenant() -> None:
    code, out, _ = invoke("keys", "create", "--help")
    assert code == 0 and "join" in out


# -- the first-start key ------------------------------------------------------------------------


def test_first_start_prints_the_admin_key_once_on_stderr(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli._first_start(Settings(data_dir=data_dir))
    captured = capsys.readouterr()
    keys = [word for word in captured.err.split() if word.startswith("iq-")]
    assert len(keys) == 1, captured.err
    (secret,) = keys
    assert captured.err.count(secret) == 1 and secret not in captured.out
    assert "inferq keys create --name NAME" in captured.err

    async def check() -> bool:
        store = SQLiteStore(data_dir / "inferq.db")
        await store.open()
        try:
            return (await KeyService(store).authenticate(secret)).admin
        finally:
            await store.close()

    assert asyncio.run(check())
    # a second start makes and prints nothing
    cli._first_start(Settings(data_dir=data_dir))
    again = capsys.readouterr()
    assert "iq-" not in again.err + again.out
