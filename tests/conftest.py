from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's INFERQ_* settings."""
    for name in list(os.environ):
        if name.startswith("INFERQ_"):
            monkeypatch.delenv(name)


#: lines of each process log shown with a failed test (request lines of health checks left out)
LOG_TAIL = 120


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that ran servers or nodes shows the end of their logs, so a failure
    in CI (where the temporary folders are gone) can be explained from its output."""
    report = yield
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and isinstance(tmp, Path):
        for log in sorted(tmp.glob("*.log")):
            lines = [
                line
                for line in log.read_text(errors="replace").splitlines()
                if "/healthz" not in line and "/readyz" not in line
            ]
            report.sections.append((f"log {log.name}", "\n".join(lines[-LOG_TAIL:])))
    return report
