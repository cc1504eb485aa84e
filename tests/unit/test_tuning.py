"""``inferq tune``'s file and how serve applies it; the search on a fake measurement.

The models here point at a stand-in GGUF file: nothing loads a model, the
fingerprint only reads the file's size and modification time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferq.cli import app
from inferq.engines import tuning, tuning_search
from inferq.engines.base import ModelSpec
from inferq.engines.registry import DEFAULT_EMBEDDING_MODEL, DEFAULT_MODEL, load_specs
from inferq.engines.tuning import EngineSettings, Fingerprint, Tuned

TUNED = {"slots": 16, "flash_attention": True, "batch_size": 256, "threads": 1}


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def models_file(tmp_path: Path, gguf: Path, extra: str = "") -> Path:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.m]\nengine = "llamacpp"\npath = "{gguf}"\n{extra}')
    return path


def write_tuned(data_dir: Path, gguf: Path, **fingerprint: object) -> None:
    current = dataclasses.replace(Fingerprint.of(gguf), **fingerprint)
    entry = Tuned(
        settings=dict(TUNED), gain=0.2, tuned_at="2026-12-05T10:00:00Z", fingerprint=current
    )
    tuning.write_file(tuning.tuning_file(data_dir), {"m": entry})


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- the file ---------------------------------------------------------------------------


def test_the_file_round_trips_private_and_keeps_other_models(data_dir: Path, gguf: Path) -> None:
    write_tuned(data_dir, gguf)
    path = tuning.tuning_file(data_dir)
    other = Tuned(
        settings={"threads": "auto"},
        gain=0.0,
        tuned_at="2026-12-06T08:00:00Z",
        fingerprint=dataclasses.replace(Fingerprint.of(gguf), model_file='C:\\a "b"\x7f'),
    )
    tuning.write_file(path, {"other model": other})
    entries = tuning.read_file(path)
    assert entries["m"].settings == TUNED
    assert entries["m"].fingerprint == Fingerprint.of(gguf)
    assert entries["other model"] == other
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in data_dir.iterdir()] == [path.name]  # no temporary left


def test_serve_applies_the_tuned_settings(tmp_path: Path, data_dir: Path, gguf: Path) -> None:
    path = models_file(tmp_path, gguf)
    assert load_specs(path, tuning_dir=data_dir)["m"].slots == 1  # no file yet: as configured
    write_tuned(data_dir, gguf)
    spec = load_specs(path, tuning_dir=data_dir)["m"]
    assert spec.slots == 16
    assert spec.options == {
        "path": str(gguf),
        "flash_attention": True,
        "batch_size": 256,
        "threads": 1,
    }
    assert load_specs(path)["m"].slots == 1  # without a data dir (one-shot commands): untouched


def test_without_a_file_serve_says_the_defaults_run_and_how_to_tune(
    tmp_path: Path, data_dir: Path, gguf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = models_file(tmp_path, gguf)
    with caplog.at_level(logging.INFO, logger="inferq"):
        load_specs(path, tuning_dir=data_dir)
    [line] = [r.getMessage() for r in caplog.records if "tuning file" in r.getMessage()]
    assert "the default llama.cpp settings apply to m " in line and "inferq tune" in line
    assert str(tuning.tuning_file(data_dir)) in line
    caplog.clear()
    write_tuned(data_dir, gguf)
    with caplog.at_level(logging.INFO, logger="inferq"):
        load_specs(path, tuning_dir=data_dir)
    assert not [r for r in caplog.records if "no tuning file" in r.getMessage()]


def test_nothing_to_tune_says_nothing(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models.f]\nengine = "fake"\n')
    with caplog.at_level(logging.INFO, logger="inferq"):
        load_specs(path, tuning_dir=data_dir)
    assert not [r for r in caplog.records if "tuning file" in r.getMessage()]


def test_explicit_configuration_wins(tmp_path: Path, data_dir: Path, gguf: Path) -> None:
    path = models_file(tmp_path, gguf, "slots = 2\nflash_attention = false\n")
    write_tuned(data_dir, gguf)
    spec = load_specs(path, tuning_dir=data_dir)["m"]
    assert spec.slots == 2
    assert spec.options["flash_attention"] is False
    assert (spec.options["batch_size"], spec.options["threads"]) == (256, 1)


def test_the_default_chat_model_is_tuned_and_the_embedding_model_is_not(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, gguf: Path
) -> None:
    monkeypatch.setattr(tuning, "default_model_path", lambda: gguf)
    current = Fingerprint.of(gguf)
    entry = Tuned(settings=dict(TUNED), gain=0.2, tuned_at="t", fingerprint=current)
    tuning.write_file(tuning.tuning_file(data_dir), {DEFAULT_MODEL: entry})
    specs = load_specs(None, tuning_dir=data_dir)
    assert specs[DEFAULT_MODEL].slots == 16
    assert specs[DEFAULT_MODEL].options["flash_attention"] is True
    assert specs[DEFAULT_EMBEDDING_MODEL] == load_specs(None)[DEFAULT_EMBEDDING_MODEL]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("version = 1\n[models.m\n", "could not be read"),
        ("version = 7\n", "has version 7"),
        ("version = 1\n[models.m]\ngain = 0.1\n", "a bad entry"),
    ],
)
def test_a_file_that_does_not_parse_is_ignored_with_a_warning(
    tmp_path: Path,
    data_dir: Path,
    gguf: Path,
    caplog: pytest.LogCaptureFixture,
    content: str,
    reason: str,
) -> None:
    path = models_file(tmp_path, gguf)
    data_dir.mkdir()
    tuning.tuning_file(data_dir).write_text(content)
    with caplog.at_level(logging.INFO, logger="inferq"):
        specs = load_specs(path, tuning_dir=data_dir)
    assert specs == load_specs(path)
    [warning] = warnings_of(caplog)
    assert reason in warning and "tuning.toml" in warning


@pytest.mark.parametrize(
    ("setting", "value"), [("slots", "0"), ("flash_attention", '"yes"'), ("threads", '"all"')]
)
def test_a_bad_value_is_ignored_with_a_warning(
    tmp_path: Path,
    data_dir: Path,
    gguf: Path,
    caplog: pytest.LogCaptureFixture,
    setting: str,
    value: str,
) -> None:
    path = models_file(tmp_path, gguf)
    write_tuned(data_dir, gguf)
    file = tuning.tuning_file(data_dir)
    lines = file.read_text().splitlines()
    lines = [f"{setting} = {value}" if line.startswith(f"{setting} =") else line for line in lines]
    file.write_text("\n".join(lines))
    with caplog.at_level(logging.INFO, logger="inferq"):
        assert load_specs(path, tuning_dir=data_dir) == load_specs(path)
    [warning] = warnings_of(caplog)
    assert setting in warning


def test_settings_of_another_cpu_are_stale(
    tmp_path: Path, data_dir: Path, gguf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = models_file(tmp_path, gguf)
    write_tuned(data_dir, gguf, cpu="Some Other CPU", cores=64)
    with caplog.at_level(logging.INFO, logger="inferq"):
        assert load_specs(path, tuning_dir=data_dir) == load_specs(path)
    [warning] = warnings_of(caplog)
    assert "Some Other CPU" in warning and "run inferq tune again" in warning


def test_settings_of_a_changed_model_file_are_stale(
    tmp_path: Path, data_dir: Path, gguf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = models_file(tmp_path, gguf)
    write_tuned(data_dir, gguf)
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with caplog.at_level(logging.INFO, logger="inferq"):
        assert load_specs(path, tuning_dir=data_dir) == load_specs(path)
    [warning] = warnings_of(caplog)
    assert "model_mtime_ns" in warning


def test_settings_of_a_model_no_longer_configured_are_left_alone(
    tmp_path: Path, data_dir: Path, gguf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_tuned(data_dir, gguf)
    path = tmp_path / "other.toml"
    path.write_text(f'[models.n]\nengine = "llamacpp"\npath = "{gguf}"\n')
    with caplog.at_level(logging.INFO, logger="inferq"):
        assert load_specs(path, tuning_dir=data_dir) == load_specs(path)
    assert not warnings_of(caplog)


# -- the search, on a fake measurement ----------------------------------------------------


def fake_rate(settings: EngineSettings, flash_gain: float) -> float:
    """Tokens/s: 16 slots beat 8 beat 4, flash attention gains ``flash_gain``, batch 256
    and one thread lose."""
    rate = {1: 20.0, 4: 80.0, 8: 100.0, 16: 110.0}[settings.slots]
    rate *= flash_gain if settings.flash_attention else 1.0
    rate *= 0.9 if settings.batch_size == 256 else 1.0
    return rate * (0.6 if settings.threads == 1 else 1.0)


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list[ModelSpec]:
    """Replace the engine's measurement by :func:`fake_rate`; the specs it was given."""
    specs: list[ModelSpec] = []
    flash_gain = 1.2

    async def measure(spec: ModelSpec, workload: tuning_search.Workload) -> tuple[float, None]:
        specs.append(spec)
        return fake_rate(EngineSettings.of(spec), flash_gain), None

    monkeypatch.setattr(tuning_search, "measure", measure)
    return specs


def test_tune_writes_the_fastest_settings_and_serve_uses_them(
    tmp_path: Path, data_dir: Path, gguf: Path, measured: list[ModelSpec]
) -> None:
    path = models_file(tmp_path, gguf, "threads = 2\n")
    result = CliRunner().invoke(
        app, ["tune", "--models", str(path), "--data-dir", str(data_dir), "--budget", "60"]
    )
    assert result.exit_code == 0, result.output
    assert "chose slots 16, flash_attention true" in result.output
    assert str(tuning.tuning_file(data_dir)) in result.output
    # threads is set in the models file: never searched, never written
    assert all(spec.options["threads"] == 2 for spec in measured)
    assert tuning.read_file(tuning.tuning_file(data_dir))["m"].settings == {
        "slots": 16,
        "flash_attention": True,
        "batch_size": 128,
    }
    spec = load_specs(path, tuning_dir=data_dir)["m"]
    assert (spec.slots, spec.options["flash_attention"], spec.options["threads"]) == (16, True, 2)


async def test_a_gain_under_the_margin_keeps_the_baseline(
    tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def measure(spec: ModelSpec, workload: tuning_search.Workload) -> tuple[float, None]:
        settings = EngineSettings.of(spec)
        return (103.0 if settings.flash_attention else 100.0), None

    monkeypatch.setattr(tuning_search, "measure", measure)
    spec = load_specs(models_file(tmp_path, gguf, "slots = 8\n"))["m"]
    plan = tuning_search.plan(spec, {"slots"}, budget=60, quick=False)
    outcome = await tuning_search.tune(spec, plan, deadline=float("inf"))
    assert outcome.winner.flash_attention is True
    assert outcome.chosen == outcome.baseline
    assert outcome.entry().settings == {
        "flash_attention": False,
        "batch_size": 128,
        "threads": "auto",
    }
    assert [t.step for t in outcome.trials].count("confirm") == 4


async def test_a_trial_other_processes_disturbed_is_taken_again(
    tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    async def measure(spec: ModelSpec, workload: tuning_search.Workload) -> tuple[float, float]:
        calls.append(spec.slots)
        first = len(calls) == 1
        return (10.0, 1.5) if first else (100.0, 0.0)  # the first one shared the cores

    monkeypatch.setattr(tuning_search, "measure", measure)
    monkeypatch.setattr(tuning_search, "_wait_until_quiet", lambda patience: None)
    spec = load_specs(models_file(tmp_path, gguf, "slots = 8\nthreads = 2\n"))["m"]
    plan = dataclasses.replace(
        tuning_search.plan(spec, {"slots", "threads"}, budget=60, quick=False),
        candidates={},
    )
    outcome = await tuning_search.tune(spec, plan, deadline=float("inf"))
    [baseline] = outcome.trials
    assert (baseline.rate, baseline.others, baseline.attempts) == (100.0, 0.0, 2)
    assert calls == [8, 8]


async def test_a_gain_over_a_disturbed_baseline_keeps_the_baseline(
    tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    baseline_runs: list[int] = []

    async def measure(spec: ModelSpec, workload: tuning_search.Workload) -> tuple[float, float]:
        if spec.slots == 16:
            return 130.0, 0.0
        baseline_runs.append(1)
        return 100.0, (0.0 if len(baseline_runs) == 1 else 1.5)  # busy cores in confirmation

    monkeypatch.setattr(tuning_search, "measure", measure)
    monkeypatch.setattr(tuning_search, "_wait_until_quiet", lambda patience: None)
    spec = load_specs(models_file(tmp_path, gguf, "slots = 8\n"))["m"]
    plan = dataclasses.replace(
        tuning_search.plan(spec, set(), budget=60, quick=False), candidates={"slots": (16,)}
    )
    outcome = await tuning_search.tune(spec, plan, deadline=float("inf"))
    assert outcome.winner.slots == 16 and outcome.gain == pytest.approx(0.3)
    assert outcome.disturbed == 1.5
    assert outcome.chosen == outcome.baseline


async def test_a_baseline_that_made_nothing_in_confirmation_keeps_the_baseline(
    tmp_path: Path, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a machine too busy to generate anything in a trial's window, the baseline's
    confirmation measured 0 tokens/s and the gain divided by it (a ZeroDivisionError
    ended ``inferq tune``)."""
    baseline_runs: list[int] = []

    async def measure(spec: ModelSpec, workload: tuning_search.Workload) -> tuple[float, float]:
        if spec.slots == 16:
            return 12.0, 0.0
        baseline_runs.append(1)
        return (4.7 if len(baseline_runs) == 1 else 0.0), 0.0

    monkeypatch.setattr(tuning_search, "measure", measure)
    spec = load_specs(models_file(tmp_path, gguf, "slots = 8\n"))["m"]
    plan = dataclasses.replace(
        tuning_search.plan(spec, set(), budget=60, quick=False), candidates={"slots": (16,)}
    )
    outcome = await tuning_search.tune(spec, plan, deadline=float("inf"))
    assert outcome.winner.slots == 16
    assert outcome.chosen == outcome.baseline
