"""The CLI on a real SQLite data directory, in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferq import __version__
from inferq.cli import app
from inferq.cli.common import ServiceOptions
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


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_help_shows_each_option_with_its_environment_variable(command: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0
    text = "".join(out.split())  # the help wraps its lines (at spaces and hyphens)
    for flag, hint in [
        ("--data-dir", "[env INFERQ_DATA_DIR; default ./inferq-data]"),
        ("--models", "[env INFERQ_MODELS_FILE]"),
        ("--database-url", "[env INFERQ_DATABASE_URL]"),
        ("--log-level", "debug, info, warning, error."),
        ("--log-format", "[env INFERQ_LOG_FORMAT]"),
    ]:
        assert flag in text and "".join(hint.split()) in text


def test_service_options_make_the_settings_and_a_child_process_command_line(
    tmp_path: Path,
) -> None:
    options = ServiceOptions(tmp_path / "d", tmp_path / "m.toml", None, "debug", None)
    assert options.argv() == [
        "--data-dir",
        str(tmp_path / "d"),
        "--models",
        str(tmp_path / "m.toml"),
        "--log-level",
        "debug",
    ]
    config = options.settings(port=9001)
    assert config.data_dir == tmp_path / "d" and config.models_file == tmp_path / "m.toml"
    assert (config.log_level.lower(), config.port) == ("debug", 9001)


def test_service_options_keep_the_database_url_out_of_their_repr_and_command_lines() -> None:
    url = "postgresql://inferq:s3cret-pw@db/inferq"
    options = ServiceOptions(None, None, url, None, None)
    assert "s3cret-pw" not in repr(options)
    # a child process gets it in its environment, not on its command line (which `ps`
    # shows every user of the machine)
    assert options.argv() == [] and options.environ() == {"INFERQ_DATABASE_URL": url}


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


# -- batches -----------------------------------------------------------------


def _batch_input(path: Path, rows: int, *, fail: int | None = None) -> Path:
    import json

    from inferq.engines.fake import FAIL_TRIGGER

    with path.open("w") as f:
        for i in range(rows):
            text = FAIL_TRIGGER if i == fail else f"row {i}"
            body = {"messages": [{"role": "user", "content": text}], "max_tokens": 4}
            f.write(json.dumps({"custom_id": f"c{i}", "body": body}) + "\n")
    return path


def test_batch_run_wait_runs_here_and_writes_both_files(tmp_path: Path, data_dir: Path) -> None:
    import json

    from tests.support.server import fake_models_file

    models = fake_models_file(tmp_path / "models.toml", slots=3)
    source = _batch_input(tmp_path / "in.jsonl", 12, fail=5)
    common = ["--data-dir", str(data_dir)]
    run = ["batch", "run", "--models", str(models), "--model", "fake", *common]
    code, _, err = invoke(*run, "--wait", str(source))
    # a row failed: the batch succeeded, the command says so and exits 0
    assert code == 0, err
    assert "no worker took the batch up" in err
    results = [json.loads(x) for x in (tmp_path / "in.output.jsonl").read_text().splitlines()]
    errors = [json.loads(x) for x in (tmp_path / "in.errors.jsonl").read_text().splitlines()]
    assert [r["custom_id"] for r in results] == [f"c{i}" for i in range(12) if i != 5]
    assert results[0]["response"]["choices"][0]["message"]["content"] == "echo: row 0"
    assert [e["custom_id"] for e in errors] == ["c5"]

    code, out, _ = invoke("batch", "list", *common)
    assert code == 0 and "succeeded" in out and "fireworks" in out
    batch_id = out.split("cli-", 1)[1].split()[0]
    code, out, _ = invoke("batch", "show", "cli-" + batch_id, *common)
    assert code == 0 and '"succeeded": 11' in out and '"failed": 1' in out
    target = tmp_path / "again.jsonl"
    again_errors = tmp_path / "again.errors.jsonl"
    download = ["batch", "download", "cli-" + batch_id, "--output", str(target)]
    code, _, err = invoke(*download, "--errors", str(again_errors), *common)
    assert code == 0, err
    assert target.read_text() == (tmp_path / "in.output.jsonl").read_text()
    assert again_errors.read_text() == (tmp_path / "in.errors.jsonl").read_text()


def test_batch_run_without_wait_prints_the_id_and_a_bad_file_fails(
    tmp_path: Path, data_dir: Path
) -> None:
    from tests.support.server import fake_models_file

    models = fake_models_file(tmp_path / "models.toml")
    common = ["--data-dir", str(data_dir)]
    run = ["batch", "run", "--models", str(models), *common]
    source = _batch_input(tmp_path / "in.jsonl", 3)
    code, out, _ = invoke(*run, "--model", "fake", str(source))
    assert code == 0 and out.strip().startswith("cli-")
    code, out, _ = invoke("batch", "cancel", out.strip(), *common)
    assert code == 0 and "cancelling" in out

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a", "body": {"messages": []}}\n')
    code, _, err = invoke(*run, "--model", "fake", "--wait", str(bad))
    assert code == 1
    assert "bad.jsonl:1" in err and "messages" in err

    code, _, err = invoke(*run, "--model", "nope", str(source))
    assert code == 1 and "nope" in err
