"""``inferq tune --quick`` with the real model, then ``inferq serve`` on its data directory.

What the test checks is behaviour, not speed: whichever settings the quick search
chose on this machine, the server runs those.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from inferq.engines import tuning
from tests.integration.helpers import MODEL
from tests.support.server import Server, inferq

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: nothing the search varies is set here (threads is, to spare a 2-core machine)
MODELS = f"""\
[models."{MODEL}"]
engine = "llamacpp"
context_length = 512
threads = 1
"""


def test_serve_runs_the_settings_tune_wrote(tmp_path: Path) -> None:
    models, data = tmp_path / "models.toml", tmp_path / "data"
    models.write_text(MODELS)
    printed = inferq("tune", "--quick", "--models", str(models), "--data-dir", str(data))
    assert "Wrote" in printed and "tuning.toml" in printed
    settings = tuning.read_file(tuning.tuning_file(data))[MODEL].settings
    assert set(settings) == {"slots", "flash_attention"}

    server = Server(data, models_file=models).start()
    try:
        log = server.log()
    finally:
        server.stop()
    flash = "on" if settings["flash_attention"] else "off"
    loaded = re.search(rf"model {MODEL}: slots (\d+), context 512, flash attention (\w+)", log)
    assert loaded is not None, log
    assert (int(loaded[1]), loaded[2]) == (settings["slots"], flash)
    assert f"model {MODEL}: settings from inferq tune" in log


def test_serve_ignores_a_stale_tuning_file_with_a_warning(tmp_path: Path) -> None:
    models, data = tmp_path / "models.toml", tmp_path / "data"
    models.write_text(MODELS)
    data.mkdir(mode=0o700)
    path = tuning.tuning_file(data)
    fingerprint = tuning.Fingerprint.of(tuning.default_model_path())
    stale = tuning.Tuned(
        settings={"slots": 3, "flash_attention": True},
        gain=0.5,
        tuned_at="2026-01-01T00:00:00Z",
        fingerprint=dataclasses.replace(fingerprint, llama_cpp="0.0.1"),
    )
    tuning.write_file(path, {MODEL: stale})
    server = Server(data, models_file=models).start()
    try:
        log = server.log()
    finally:
        server.stop()
    assert "llama_cpp was '0.0.1'" in log and "ignored" in log
    assert f"model {MODEL}: slots 1, context 512, flash attention off" in log
