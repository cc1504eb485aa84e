"""No module of the package is over 500 lines: a longer one is split by what its parts
do before it grows further (the layout the redesign drew; import-linter keeps the layers)."""

from __future__ import annotations

from pathlib import Path

import inferq

MAX_LINES = 500


def test_no_module_is_over_500_lines() -> None:
    root = Path(inferq.__file__).parent
    sizes = {
        str(path.relative_to(root)): len(path.read_text(encoding="utf-8").splitlines())
        for path in root.rglob("*.py")
    }
    assert len(sizes) > 100  # the package's own modules were found
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
